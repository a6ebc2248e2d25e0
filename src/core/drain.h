/*
 * The process-wide draining flag: set once on SIGTERM/SIGINT when
 * CHATD_DRAIN_MS > 0, read by /readyz (503 "draining") on every worker so a
 * load balancer takes the instance out before its listeners close.
 */
#ifndef CHAT_CORE_DRAIN_H
#define CHAT_CORE_DRAIN_H

/** Marks the process as draining (idempotent, any thread). */
void chat_drain_begin(void);

/** Nonzero once chat_drain_begin() was called (any thread). */
int chat_drain_active(void);

#endif
