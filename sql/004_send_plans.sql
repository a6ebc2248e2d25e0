-- The statements of a send (the lock also edits' and deletes'), and the
-- history page, as PL/pgSQL functions.
--
-- Through PgBouncer in transaction mode chatd cannot keep prepared
-- statements (PgBouncer 1.18 does not track them), so a statement sent as
-- text is parsed and planned on every execution: for a send's four
-- statements that planning cost about as much PostgreSQL CPU as running
-- them. PL/pgSQL keeps the plan of each statement it runs for the life of the
-- server connection (the plan cache: custom plans at first, then a generic
-- one when it is as good), and PgBouncer's server connections live long.
-- chatd sends `SELECT * FROM f($1, …)`, cheap to plan, with the same
-- columns as the statement it replaces.
--
-- Each function runs one statement, and each is called by its own
-- statement of the send's transaction, so each still takes its own snapshot
-- (READ COMMITTED): the transaction behaves as before. VOLATILE, the default.

-- Locks the conversation row for a member (one row), or nothing: statement 1
-- of every send, edit and delete.
CREATE FUNCTION chat_conv_lock(p_conv bigint, p_sender bigint) RETURNS SETOF integer
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY SELECT 1 FROM conversations c JOIN members m ON m.conversation_id = c.id
        AND m.user_id = p_sender WHERE c.id = p_conv FOR UPDATE OF c;
END
$$;

-- Takes the next seq and rev, inserts the message and its event, counts it
-- and moves the sender's read marker, unless the client_msg_id or the op_id
-- is taken (a retry). One row: whether the sender is a member, the new
-- message (NULLs for a retry or a non-member), its rev and the
-- conversation's message count with it (what a count read would now answer).
CREATE FUNCTION chat_send_insert(p_conv bigint, p_sender bigint, p_body text, p_client_msg_id text,
                                 p_op_id uuid)
RETURNS TABLE (is_member bigint, id bigint, conversation_id bigint, seq bigint, sender_id bigint,
               body text, created_at text, edited_at text, deleted boolean, client_msg_id text,
               rev bigint, message_count bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH ok AS (SELECT 1 FROM members WHERE members.conversation_id = p_conv
                  AND members.user_id = p_sender),
    dup AS (SELECT 1 FROM messages WHERE (messages.sender_id = p_sender
              AND messages.conversation_id = p_conv AND messages.client_msg_id = p_client_msg_id)
              OR messages.op_id = p_op_id),
    upd AS (UPDATE conversations c SET last_seq = c.last_seq + 1, rev = c.rev + 1,
              message_count = c.message_count + 1,
              last_message_at = GREATEST(c.last_message_at, now())
            WHERE c.id = p_conv AND EXISTS (SELECT 1 FROM ok) AND NOT EXISTS (SELECT 1 FROM dup)
            RETURNING c.last_seq, c.rev, c.message_count),
    ins AS (INSERT INTO messages (conversation_id, sender_id, body, client_msg_id, op_id, seq)
            SELECT p_conv, p_sender, p_body, p_client_msg_id, p_op_id, upd.last_seq FROM upd
            RETURNING *),
    ev AS (INSERT INTO events (conversation_id, rev, type, message_id)
           SELECT p_conv, upd.rev, 1, ins.id FROM upd, ins),
    mark AS (UPDATE members SET last_read_seq = GREATEST(members.last_read_seq, ins.seq) FROM ins
             WHERE members.conversation_id = p_conv AND members.user_id = p_sender)
    SELECT (SELECT count(*) FROM ok), ins.id, ins.conversation_id, ins.seq, ins.sender_id, ins.body,
           to_char(ins.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           to_char(ins.edited_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           ins.deleted, ins.client_msg_id, (SELECT upd.rev FROM upd),
           (SELECT upd.message_count FROM upd)
    FROM (SELECT 1) one LEFT JOIN ins ON true;
END
$$;

-- A history page for a member, newest first: p_limit messages from
-- p_offset, below the message p_before_id when given. The membership row
-- drives the page: no row for a non-member, one row of NULLs for a member of
-- an empty page. Within a conversation ids grow with seq, so "id <
-- p_before_id" is "seq below the seq of the first message with an id >=
-- p_before_id" (found along messages_conversation_id_id): the page stays one
-- range scan of the seq index.
CREATE FUNCTION chat_history_page(p_conv bigint, p_user bigint, p_limit integer, p_offset integer,
                                  p_before_id bigint)
RETURNS TABLE (id bigint, conversation_id bigint, seq bigint, sender_id bigint, body text,
               created_at text, edited_at text, deleted boolean, client_msg_id text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT p.id, p.conversation_id, p.seq, p.sender_id, p.body,
           to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           to_char(p.edited_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           p.deleted, p.client_msg_id
    FROM members mem LEFT JOIN LATERAL (
        SELECT * FROM messages WHERE messages.conversation_id = p_conv
          AND messages.seq < COALESCE((SELECT b.seq FROM messages b WHERE b.conversation_id = p_conv
              AND b.id >= p_before_id ORDER BY b.id LIMIT 1), 9223372036854775807)
        ORDER BY messages.seq DESC LIMIT p_limit OFFSET p_offset) p ON true
    WHERE mem.conversation_id = p_conv AND mem.user_id = p_user
    ORDER BY p.seq DESC;
END
$$;
