/*
 * Running a replay script (replay.h) inside the program: strokes and
 * keys are pushed as SDL events, so they take the same path as a real
 * mouse and keyboard; waits hold the script while the program goes on.
 */
#ifndef DADC_DRAW_PLAYER_H
#define DADC_DRAW_PLAYER_H

#include "app.h"
#include "replay.h"

typedef struct player {
    replay_t script;
    int next;                /* index of the next command */
    bool waiting;            /* the current command is a wait under way */
    uint32_t started;        /* SDL ticks when that wait began */
    unsigned figures_seen;   /* figures count when wait-stats began */
    unsigned notices_seen;   /* event count when wait-notice began */
    int timeout_ms;
} player_t;

/*
 * Run commands until one has to wait or has pushed events the program
 * must handle first. Returns the milliseconds until it wants to run
 * again (0: at once), or -1 once the script has ended (app->quit is
 * then set). A wait that times out or a save that fails sets
 * app->exit_status to APP_EXIT_REPLAY, prints why and ends the script.
 */
int player_step(player_t *pl, app_t *app);

#endif
