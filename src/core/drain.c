/*
 * The process-wide draining flag (see drain.h): one atomic, set by the main
 * thread's signal handler and read by the workers' /readyz.
 */
#include "core/drain.h"

#include <stdatomic.h>

static atomic_int draining;

void chat_drain_begin(void)
{
    atomic_store(&draining, 1);
}

int chat_drain_active(void)
{
    return atomic_load(&draining);
}
