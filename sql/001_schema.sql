-- chatd schema: users and their tokens, conversations, members and messages.
CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Bearer tokens are stored only as their SHA-256 hash.
CREATE TABLE tokens (
    hash        bytea PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users(id),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tokens_user_id ON tokens (user_id);

-- message_count is kept by every send so a count never scans messages.
CREATE TABLE conversations (
    id               bigserial PRIMARY KEY,
    title            text NOT NULL,
    created_by       bigint NOT NULL REFERENCES users(id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    member_count     integer NOT NULL DEFAULT 0,
    message_count    bigint NOT NULL DEFAULT 0,
    last_message_at  timestamptz
);

CREATE TABLE members (
    conversation_id  bigint NOT NULL REFERENCES conversations(id),
    user_id          bigint NOT NULL REFERENCES users(id),
    joined_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX members_user_id ON members (user_id);

CREATE TABLE messages (
    id               bigserial PRIMARY KEY,
    conversation_id  bigint NOT NULL REFERENCES conversations(id),
    sender_id        bigint NOT NULL REFERENCES users(id),
    body             text NOT NULL,
    client_msg_id    text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
-- A history page is a backward range scan of this index.
CREATE INDEX messages_conversation_id_id ON messages (conversation_id, id);
-- Sends are idempotent per (sender, conversation, client_msg_id).
CREATE UNIQUE INDEX messages_idempotency ON messages (sender_id, conversation_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
