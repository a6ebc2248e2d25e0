// The REST half of chatd's contract (docs/api.md), for one signed-in user.

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message || code || `HTTP ${status}`);
    this.status = status; // 0: the request did not reach the server
    this.code = code;
    this.retryAfter = retryAfter;
  }
  // Worth trying again later with the same request.
  get transient() {
    return this.status === 0 || this.status === 429 || this.status === 503;
  }
}

async function call(method, path, { token, body, signal } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
      signal,
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "network", "chatd cannot be reached");
  }
  if (resp.status === 204) return null;
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const err = data && data.error ? data.error : {};
    const ra = Number(resp.headers.get("Retry-After")) || 0;
    throw new ApiError(resp.status, err.code, err.message, ra);
  }
  return data;
}

export function signup(name) {
  return call("POST", "/api/v1/users", { body: { name } });
}

export class Api {
  constructor(token) {
    this.token = token;
    this.onUnauthorized = null; // called once a 401 says the token is no good
  }

  async req(method, path, body) {
    try {
      return await call(method, path, { token: this.token, body });
    } catch (e) {
      if (e.status === 401 && this.onUnauthorized) this.onUnauthorized(e);
      throw e;
    }
  }

  user(id) {
    return this.req("GET", `/api/v1/users/${id}`);
  }
  inbox(cursor, limit = 20) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (cursor) q.set("cursor", cursor);
    return this.req("GET", `/api/v1/conversations?${q}`);
  }
  conversation(id) {
    return this.req("GET", `/api/v1/conversations/${id}`);
  }
  createConversation(title, memberIds) {
    return this.req("POST", "/api/v1/conversations", { title, member_ids: memberIds });
  }
  members(id, afterId = 0) {
    return this.req("GET", `/api/v1/conversations/${id}/members?limit=1000&after_id=${afterId}`);
  }
  addMember(id, userId) {
    return this.req("POST", `/api/v1/conversations/${id}/members`, { user_id: userId });
  }
  // Newest first; beforeId: only older than that message.
  history(id, beforeId, limit = 50) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (beforeId) q.set("before_id", String(beforeId));
    return this.req("GET", `/api/v1/conversations/${id}/messages?${q}`);
  }
  // Oldest first: the messages after seq.
  catchUp(id, afterSeq, limit = 100) {
    return this.req(
      "GET",
      `/api/v1/conversations/${id}/messages?after_seq=${afterSeq}&limit=${limit}`,
    );
  }
  send(id, body, clientMsgId) {
    return this.req("POST", `/api/v1/conversations/${id}/messages`, {
      body,
      client_msg_id: clientMsgId,
    });
  }
  edit(id, messageId, body) {
    return this.req("PATCH", `/api/v1/conversations/${id}/messages/${messageId}`, { body });
  }
  remove(id, messageId) {
    return this.req("DELETE", `/api/v1/conversations/${id}/messages/${messageId}`);
  }
  events(id, afterRev, limit = 1000) {
    return this.req(
      "GET",
      `/api/v1/conversations/${id}/events?after_rev=${afterRev}&limit=${limit}`,
    );
  }
  read(id, seq) {
    return this.req("POST", `/api/v1/conversations/${id}/read`, { seq });
  }
}
