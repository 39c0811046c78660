/*
 * dadc-server: read the settings, open the store, serve until SIGINT or
 * SIGTERM. Exit status: 0 after a clean shutdown, 1 when the server could
 * not start or failed while running, 2 on a usage error.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <uv.h>

#include "config.h"
#include "log.h"
#include "server.h"

int main(int argc, char **argv)
{
    server_config_t cfg;
    log_level_t level = LOG_INFO;
    dadc_error_t err;
    server_t *s;
    int rc;

    /* A peer that vanishes mid-write must give EPIPE, not kill us. */
    signal(SIGPIPE, SIG_IGN);
    dadc_error_clear(&err);
    rc = config_load(&cfg, argc, argv, &err);
    if (rc == 1)
        return 0;
    if (rc != 0) {
        fprintf(stderr, "dadc-server: %s\ntry 'dadc-server --help'\n",
                dadc_error_message(&err));
        return 2;
    }
    log_level_parse(cfg.log_level, &level);
    log_level_set(level);

    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        fprintf(stderr, "dadc-server: out of memory\n");
        return 1;
    }
    if (server_init(s, uv_default_loop(), &cfg, &err) != 0)
        fprintf(stderr, "dadc-server: %s\n", dadc_error_message(&err));
    rc = server_run(s);
    uv_loop_close(uv_default_loop());
    free(s);
    return rc;
}
