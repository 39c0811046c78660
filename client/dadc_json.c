/*
 * Protocol records as JSON for `dadc --json`, and events as text. Field
 * names follow proto/dadc.proto.
 */
#include "dadc_cli.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *str_or_empty(const char *s)
{
    return s != NULL ? s : "";
}

static cJSON *json_figures(Dadc__EvalFigures *const *f, size_t n)
{
    cJSON *arr = cJSON_CreateArray();
    size_t i;

    for (i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();

        cJSON_AddStringToObject(o, "set", str_or_empty(f[i]->set));
        cJSON_AddNumberToObject(o, "examples", f[i]->examples);
        cJSON_AddNumberToObject(o, "correct", f[i]->correct);
        cJSON_AddNumberToObject(o, "accuracy", f[i]->accuracy);
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

cJSON *cli_json_model(const Dadc__ModelInfo *m)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddNumberToObject(o, "version", m->version);
    cJSON_AddNumberToObject(o, "parent_version", m->parent_version);
    cJSON_AddNumberToObject(o, "round", m->round);
    cJSON_AddBoolToObject(o, "current", m->current);
    cJSON_AddBoolToObject(o, "promoted", m->promoted);
    cJSON_AddNumberToObject(o, "created_unix_ms",
                            (double)m->created_unix_ms);
    cJSON_AddNumberToObject(o, "mnist_test_accuracy",
                            m->mnist_test_accuracy);
    cJSON_AddNumberToObject(o, "adversarial_accuracy",
                            m->adversarial_accuracy);
    cJSON_AddItemToObject(o, "figures",
                          json_figures(m->figures, m->n_figures));
    cJSON_AddStringToObject(o, "layers", str_or_empty(m->layers));
    cJSON_AddNumberToObject(o, "size_bytes", (double)m->size_bytes);
    return o;
}

cJSON *cli_json_round(const Dadc__RoundInfo *r)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddNumberToObject(o, "round", r->round);
    cJSON_AddNumberToObject(o, "started_unix_ms",
                            (double)r->started_unix_ms);
    cJSON_AddNumberToObject(o, "finished_unix_ms",
                            (double)r->finished_unix_ms);
    cJSON_AddStringToObject(o, "trigger", str_or_empty(r->trigger));
    cJSON_AddNumberToObject(o, "train_examples", r->train_examples);
    cJSON_AddNumberToObject(o, "replay_examples", r->replay_examples);
    cJSON_AddNumberToObject(o, "base_version", r->base_version);
    cJSON_AddNumberToObject(o, "candidate_version", r->candidate_version);
    cJSON_AddBoolToObject(o, "promoted", r->promoted);
    cJSON_AddStringToObject(o, "reason", str_or_empty(r->reason));
    cJSON_AddItemToObject(o, "figures",
                          json_figures(r->figures, r->n_figures));
    cJSON_AddBoolToObject(o, "running", r->running);
    return o;
}

static cJSON *json_counts(const Dadc__CountFigures *c)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddNumberToObject(o, "submitted", c ? (double)c->submitted : 0);
    cJSON_AddNumberToObject(o, "fooled", c ? (double)c->fooled : 0);
    cJSON_AddNumberToObject(o, "error_rate", c ? c->error_rate : 0);
    return o;
}

static void json_stats_groups(cJSON *o, const Dadc__StatsResponse *s)
{
    cJSON *arr = cJSON_AddArrayToObject(o, "per_digit");
    size_t i;

    for (i = 0; i < s->n_per_digit; i++) {
        cJSON *d = json_counts(s->per_digit[i]->counts);

        cJSON_AddNumberToObject(d, "digit", s->per_digit[i]->digit);
        cJSON_AddItemToArray(arr, d);
    }
    arr = cJSON_AddArrayToObject(o, "per_annotator");
    for (i = 0; i < s->n_per_annotator; i++) {
        cJSON *a = json_counts(s->per_annotator[i]->counts);

        cJSON_AddStringToObject(a, "annotator",
                                str_or_empty(s->per_annotator[i]->annotator));
        cJSON_AddItemToArray(arr, a);
    }
    arr = cJSON_AddArrayToObject(o, "per_round");
    for (i = 0; i < s->n_per_round; i++) {
        cJSON *r = json_counts(s->per_round[i]->counts);

        cJSON_AddNumberToObject(r, "round", s->per_round[i]->round);
        if (s->per_round[i]->info != NULL)
            cJSON_AddItemToObject(r, "info",
                                  cli_json_round(s->per_round[i]->info));
        cJSON_AddItemToArray(arr, r);
    }
}

cJSON *cli_json_stats(const Dadc__StatsResponse *s)
{
    cJSON *o = cJSON_CreateObject(), *arr;
    size_t i;

    cJSON_AddItemToObject(o, "overall", json_counts(s->overall));
    json_stats_groups(o, s);
    arr = cJSON_AddArrayToObject(o, "models");
    for (i = 0; i < s->n_models; i++)
        cJSON_AddItemToArray(arr, cli_json_model(s->models[i]));
    cJSON_AddNumberToObject(o, "current_model_version",
                            s->current_model_version);
    cJSON_AddNumberToObject(o, "pending_fooled", s->pending_fooled);
    cJSON_AddNumberToObject(o, "round_threshold", s->round_threshold);
    cJSON_AddBoolToObject(o, "round_running", s->round_running);
    cJSON_AddNumberToObject(o, "connections", s->connections);
    cJSON_AddNumberToObject(o, "heldout_examples",
                            (double)s->heldout_examples);
    return o;
}

cJSON *cli_json_example(const Dadc__Example *e)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddNumberToObject(o, "id", (double)e->id);
    cJSON_AddNumberToObject(o, "label", e->label);
    cJSON_AddNumberToObject(o, "predicted", e->predicted);
    cJSON_AddNumberToObject(o, "model_version", e->model_version);
    cJSON_AddBoolToObject(o, "fooled", e->fooled);
    cJSON_AddBoolToObject(o, "heldout", e->heldout);
    cJSON_AddNumberToObject(o, "created_unix_ms",
                            (double)e->created_unix_ms);
    cJSON_AddStringToObject(o, "annotator", str_or_empty(e->annotator));
    cJSON_AddNumberToObject(o, "round", e->round);
    return o;
}

cJSON *cli_json_prediction(const dadc_prediction_t *p)
{
    cJSON *o = cJSON_CreateObject();
    float probs[DADC_DIGITS];
    double d[DADC_DIGITS];
    int i;

    memcpy(probs, p->probabilities, sizeof(probs));
    for (i = 0; i < DADC_DIGITS; i++)
        d[i] = probs[i];
    cJSON_AddNumberToObject(o, "digit", p->digit);
    cJSON_AddItemToObject(o, "probabilities",
                          cJSON_CreateDoubleArray(d, DADC_DIGITS));
    cJSON_AddNumberToObject(o, "model_version", p->model_version);
    return o;
}

static const char *event_kind(const Dadc__Event *e)
{
    switch (e->kind_case) {
    case DADC__EVENT__KIND_ROUND_STARTED:
        return "round_started";
    case DADC__EVENT__KIND_ROUND_FINISHED:
        return "round_finished";
    case DADC__EVENT__KIND_MODEL_PROMOTED:
        return "model_promoted";
    case DADC__EVENT__KIND_MODEL_ROLLED_BACK:
        return "model_rolled_back";
    default:
        return "unknown";
    }
}

cJSON *cli_json_event(const Dadc__Event *e)
{
    cJSON *o = cJSON_CreateObject();

    cJSON_AddStringToObject(o, "event", event_kind(e));
    cJSON_AddNumberToObject(o, "unix_ms", (double)e->unix_ms);
    if (e->kind_case == DADC__EVENT__KIND_ROUND_STARTED &&
        e->round_started) {
        cJSON_AddNumberToObject(o, "round", e->round_started->round);
        cJSON_AddNumberToObject(o, "base_version",
                                e->round_started->base_version);
        cJSON_AddStringToObject(o, "trigger",
                                str_or_empty(e->round_started->trigger));
        cJSON_AddNumberToObject(o, "train_examples",
                                e->round_started->train_examples);
    } else if (e->kind_case == DADC__EVENT__KIND_ROUND_FINISHED &&
               e->round_finished && e->round_finished->info) {
        cJSON_AddItemToObject(o, "info",
                              cli_json_round(e->round_finished->info));
    } else if (e->kind_case == DADC__EVENT__KIND_MODEL_PROMOTED &&
               e->model_promoted) {
        cJSON_AddNumberToObject(o, "version", e->model_promoted->version);
        cJSON_AddNumberToObject(o, "previous_version",
                                e->model_promoted->previous_version);
        if (e->model_promoted->info)
            cJSON_AddItemToObject(o, "info",
                                  cli_json_model(e->model_promoted->info));
    } else if (e->kind_case == DADC__EVENT__KIND_MODEL_ROLLED_BACK &&
               e->model_rolled_back) {
        cJSON_AddNumberToObject(o, "version", e->model_rolled_back->version);
        cJSON_AddNumberToObject(o, "previous_version",
                                e->model_rolled_back->previous_version);
    }
    return o;
}

/* "2026-12-03T16:05:03Z" for unix_ms. */
static void format_time(int64_t unix_ms, char *buf, size_t size)
{
    time_t t = (time_t)(unix_ms / 1000);
    struct tm tm;

    if (gmtime_r(&t, &tm) == NULL ||
        strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, size, "?");
}

static void round_finished_text(const Dadc__RoundInfo *r, char *buf,
                                size_t size)
{
    if (r->candidate_version == 0)
        snprintf(buf, size, "round %u finished: no candidate%s%s",
                 r->round, r->reason && r->reason[0] ? ": " : "",
                 str_or_empty(r->reason));
    else if (r->reason && r->reason[0])
        snprintf(buf, size, "round %u finished: candidate v%u: %s",
                 r->round, r->candidate_version, r->reason);
    else
        snprintf(buf, size, "round %u finished: candidate v%u %s",
                 r->round, r->candidate_version,
                 r->promoted ? "promoted" : "kept back");
}

void cli_event_text(const Dadc__Event *e, char *buf, size_t size)
{
    char when[32], what[400];

    format_time(e->unix_ms, when, sizeof(when));
    snprintf(what, sizeof(what), "%s", event_kind(e));
    if (e->kind_case == DADC__EVENT__KIND_ROUND_STARTED &&
        e->round_started)
        snprintf(what, sizeof(what), "round %u started from v%u (%s, %u "
                 "examples)", e->round_started->round,
                 e->round_started->base_version,
                 str_or_empty(e->round_started->trigger),
                 e->round_started->train_examples);
    else if (e->kind_case == DADC__EVENT__KIND_ROUND_FINISHED &&
             e->round_finished && e->round_finished->info)
        round_finished_text(e->round_finished->info, what, sizeof(what));
    else if (e->kind_case == DADC__EVENT__KIND_MODEL_PROMOTED &&
             e->model_promoted)
        snprintf(what, sizeof(what), "model v%u promoted (was v%u)",
                 e->model_promoted->version,
                 e->model_promoted->previous_version);
    else if (e->kind_case == DADC__EVENT__KIND_MODEL_ROLLED_BACK &&
             e->model_rolled_back)
        snprintf(what, sizeof(what), "rolled back to v%u (was v%u)",
                 e->model_rolled_back->version,
                 e->model_rolled_back->previous_version);
    snprintf(buf, size, "%s %s", when, what);
}
