\set cid 1
\set uid 3790
SELECT p.id, p.conversation_id, p.sender_id, p.body, to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24' || chr(58) || 'MI' || chr(58) || 'SS.US"Z"'), p.client_msg_id FROM members mem LEFT JOIN LATERAL (  SELECT * FROM messages WHERE conversation_id = :cid::bigint AND (NULL::bigint IS NULL OR id < NULL::bigint) ORDER BY id DESC LIMIT 50 OFFSET 0) p ON true WHERE mem.conversation_id = :cid::bigint AND mem.user_id = :uid::bigint ORDER BY p.id DESC;
