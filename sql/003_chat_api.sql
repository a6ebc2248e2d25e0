-- 003: the chat API a client builds on — per-conversation message numbers
-- (seq), per-conversation change numbers (rev) with an append-only event log,
-- edits and tombstones, and per-member read markers. Applied in place to a
-- database written by 001–002: existing messages get seq in id order and one
-- "message" event each (rev = seq).

-- Counters on the conversation row. A send takes last_seq + 1 and rev + 1
-- under the row's lock, in the same transaction as the insert, so both come
-- with no gap and no repeat, in commit order, through any pooler.
ALTER TABLE conversations
    ADD COLUMN last_seq bigint NOT NULL DEFAULT 0,
    ADD COLUMN rev      bigint NOT NULL DEFAULT 0;

ALTER TABLE messages
    ADD COLUMN seq        bigint,
    ADD COLUMN edited_at  timestamptz,
    ADD COLUMN deleted    boolean NOT NULL DEFAULT false;

UPDATE messages m SET seq = n.seq
  FROM (SELECT id, row_number() OVER (PARTITION BY conversation_id ORDER BY id) AS seq
          FROM messages) n
 WHERE m.id = n.id;

ALTER TABLE messages ALTER COLUMN seq SET NOT NULL;
-- History by seq (newest first, after_seq), and the message with a given seq.
CREATE UNIQUE INDEX messages_conversation_seq ON messages (conversation_id, seq);
-- Tombstones only: unread counts subtract the deleted messages above a marker
-- without reading the others.
CREATE INDEX messages_deleted_seq ON messages (conversation_id, seq) WHERE deleted;

-- Every change of a conversation's messages, in rev order. type: 1 message,
-- 2 message_edited, 3 message_deleted. The message is read in its current state.
CREATE TABLE events (
    conversation_id  bigint   NOT NULL REFERENCES conversations(id),
    rev              bigint   NOT NULL,
    type             smallint NOT NULL CHECK (type BETWEEN 1 AND 3),
    message_id       bigint   NOT NULL REFERENCES messages(id),
    PRIMARY KEY (conversation_id, rev)
);

INSERT INTO events (conversation_id, rev, type, message_id)
SELECT conversation_id, seq, 1, id FROM messages;

UPDATE conversations c SET last_seq = s.last_seq, rev = s.last_seq
  FROM (SELECT conversation_id, max(seq) AS last_seq FROM messages GROUP BY conversation_id) s
 WHERE c.id = s.conversation_id;

-- The member's read marker: the highest seq they have read (0: none).
ALTER TABLE members ADD COLUMN last_read_seq bigint NOT NULL DEFAULT 0;
