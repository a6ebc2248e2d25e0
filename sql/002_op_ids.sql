-- Creating writes carry a random operation id chosen by chatd, so a write
-- whose answer was lost (its connection broke after it was sent, e.g. while
-- the pooler restarts) can be sent again, on either database path, without
-- being done twice: the second attempt finds the first by its op_id.
ALTER TABLE conversations ADD COLUMN op_id uuid;
CREATE UNIQUE INDEX conversations_op_id ON conversations (op_id) WHERE op_id IS NOT NULL;
ALTER TABLE messages ADD COLUMN op_id uuid;
CREATE UNIQUE INDEX messages_op_id ON messages (op_id) WHERE op_id IS NOT NULL;
