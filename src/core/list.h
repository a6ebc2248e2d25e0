/*
 * Intrusive circular doubly linked list. A list is a chat_list_t head whose
 * prev/next point at itself when empty; an element embeds a chat_list_t and
 * is found back with CHAT_CONTAINER_OF. Every operation is O(1) and none
 * allocates. The one list type of chatd: queues of requests, commands,
 * waiters and subscribers all use it.
 */
#ifndef CHAT_CORE_LIST_H
#define CHAT_CORE_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct chat_list {
    struct chat_list *prev, *next;
} chat_list_t;

/** The struct of type type whose member member is at ptr. */
#define CHAT_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/** Makes head an empty list (or marks an element as in no list). */
static inline void chat_list_init(chat_list_t *head)
{
    head->prev = head->next = head;
}

static inline bool chat_list_empty(const chat_list_t *head)
{
    return head->next == head;
}

/** True when an element initialised with chat_list_init is in some list. */
static inline bool chat_list_linked(const chat_list_t *e)
{
    return e->next != e;
}

static inline void chat_list_insert_tail(chat_list_t *head, chat_list_t *e)
{
    e->next = head;
    e->prev = head->prev;
    head->prev->next = e;
    head->prev = e;
}

static inline void chat_list_insert_head(chat_list_t *head, chat_list_t *e)
{
    e->prev = head;
    e->next = head->next;
    head->next->prev = e;
    head->next = e;
}

/** Unlinks e from its list and leaves it initialised (unlinking twice is harmless). */
static inline void chat_list_remove(chat_list_t *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = e;
}

/** The first element, or NULL when the list is empty. */
static inline chat_list_t *chat_list_first(const chat_list_t *head)
{
    return head->next == head ? NULL : head->next;
}

/** Moves every element of from to the tail of to; from is left empty. */
static inline void chat_list_splice_tail(chat_list_t *to, chat_list_t *from)
{
    if (chat_list_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    chat_list_init(from);
}

/**
 * Walks the list; the current element may be removed (not others): e is the
 * element, tmp the next one, both chat_list_t pointers.
 */
#define CHAT_LIST_FOREACH_SAFE(e, tmp, head)                                                       \
    for ((e) = (head)->next, (tmp) = (e)->next; (e) != (head); (e) = (tmp), (tmp) = (e)->next)

#define CHAT_LIST_FOREACH(e, head) for ((e) = (head)->next; (e) != (head); (e) = (e)->next)

#endif
