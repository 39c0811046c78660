/*
 * Pushed events: connections that called Subscribe get an Event frame for
 * every round started, round finished, promotion and rollback. Events
 * are not requests, so they do not count against a connection's
 * in-flight limit, but they do count against its unread-bytes limit: a
 * subscriber that never reads is dropped like any other.
 */
#include "conn.h"
#include "log.h"
#include "server.h"

void events_broadcast(server_t *s, Dadc__Event *ev)
{
    int n = 0;

    ev->unix_ms = server_unix_ms();
    for (conn_t *c = s->conns; c != NULL; c = c->next) {
        if (c->subscribed && !c->closing && !c->lingering) {
            conn_send_event(c, ev);
            n++;
        }
    }
    LOG(LOG_DEBUG, "events", "event %d sent to %d subscribers",
        (int)ev->kind_case, n);
}

void events_round_started(server_t *s, uint32_t round, uint32_t base,
                          const char *trigger, uint32_t train_examples)
{
    Dadc__Event ev = DADC__EVENT__INIT;
    Dadc__RoundStarted rs = DADC__ROUND_STARTED__INIT;

    rs.round = round;
    rs.base_version = base;
    rs.trigger = (char *)trigger;
    rs.train_examples = train_examples;
    ev.kind_case = DADC__EVENT__KIND_ROUND_STARTED;
    ev.round_started = &rs;
    events_broadcast(s, &ev);
}

void events_round_finished(server_t *s, const Dadc__RoundInfo *info)
{
    Dadc__Event ev = DADC__EVENT__INIT;
    Dadc__RoundFinished rf = DADC__ROUND_FINISHED__INIT;

    rf.info = (Dadc__RoundInfo *)info;
    ev.kind_case = DADC__EVENT__KIND_ROUND_FINISHED;
    ev.round_finished = &rf;
    events_broadcast(s, &ev);
}

void events_model_promoted(server_t *s, uint32_t version, uint32_t prev,
                           const Dadc__ModelInfo *info)
{
    Dadc__Event ev = DADC__EVENT__INIT;
    Dadc__ModelPromoted mp = DADC__MODEL_PROMOTED__INIT;

    mp.version = version;
    mp.previous_version = prev;
    mp.info = (Dadc__ModelInfo *)info;
    ev.kind_case = DADC__EVENT__KIND_MODEL_PROMOTED;
    ev.model_promoted = &mp;
    events_broadcast(s, &ev);
}

void events_rolled_back(server_t *s, uint32_t version, uint32_t prev)
{
    Dadc__Event ev = DADC__EVENT__INIT;
    Dadc__ModelRolledBack rb = DADC__MODEL_ROLLED_BACK__INIT;

    rb.version = version;
    rb.previous_version = prev;
    ev.kind_case = DADC__EVENT__KIND_MODEL_ROLLED_BACK;
    ev.model_rolled_back = &rb;
    events_broadcast(s, &ev);
}
