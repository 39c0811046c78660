/*
 * Helpers for the end-to-end tests: start the real dadc-server (from
 * test_bin_dir()) on 127.0.0.1 with an ephemeral port and a data dir of
 * the test's own, run the real `dadc` CLI against it, and make a small
 * base model so the server starts without base training.
 */
#ifndef DADC_E2E_UTIL_H
#define DADC_E2E_UTIL_H

#include <stdint.h>
#include <sys/types.h>

#include "dadc_client.h"
#include "idx.h"

typedef struct e2e_server {
    pid_t pid;
    int port;
    char addr[64];            /* "127.0.0.1:PORT" */
    char data_dir[512];
    char log_path[600];
    char port_file[600];
} e2e_server_t;

/*
 * The MNIST files (loaded once; the test fails when they are missing).
 */
const mnist_t *e2e_mnist(void);

/*
 * A base model made once per test process with the nn API: the
 * reference network trained for one epoch on the first 6,000 MNIST
 * training images (seed 1), saved in the test's temporary directory.
 * Returns its path.
 */
const char *e2e_base_model(void);

/*
 * Start dadc-server with --data-dir data_dir (created if missing),
 * --listen 127.0.0.1:0, --port-file, --mnist, --init-model
 * e2e_base_model() and the NULL-terminated extra arguments (may be
 * NULL). Its log goes to data_dir/../NAME.log. Waits until the port file
 * appears; fails the test if the server exits or 600 s pass.
 */
void e2e_server_start(e2e_server_t *s, const char *data_dir,
                      const char *const *extra);

/* SIGTERM, then wait; fails the test unless it exits with status 0. */
void e2e_server_stop(e2e_server_t *s);

/* SIGKILL and reap: a crash at an arbitrary moment. */
void e2e_server_kill(e2e_server_t *s);

/* Whether the server process is still running. */
int e2e_server_alive(const e2e_server_t *s);

/* A client connected to s that has said Hello as annotator; each of its
 * requests may take up to 600 s. */
dadc_client_t *e2e_connect(const e2e_server_t *s, const char *annotator);

/*
 * Run `dadc --server ADDR --timeout 600 ARGS...` (args NULL-terminated).
 * *out and *err (each may be NULL) receive its stdout and stderr,
 * malloc'd and NUL-terminated. Returns the exit status (128 + signal if
 * killed).
 */
int e2e_cli(const e2e_server_t *s, char **out, char **err, ...)
    __attribute__((sentinel));

/*
 * Start `dadc --server ADDR ARGS...` without waiting; its stdout and
 * stderr go to out_path. Returns its pid.
 */
pid_t e2e_cli_spawn(const e2e_server_t *s, const char *out_path, ...)
    __attribute__((sentinel));

/*
 * Wait up to timeout_ms for pid to exit: its exit status, or -1 if it is
 * still running (then it is left running).
 */
int e2e_wait(pid_t pid, int timeout_ms);

/* Write MNIST test image i as a 28x28 PNG at path. */
void e2e_write_test_png(const char *path, size_t i);

/* Server-side examples: every id, in order (caller frees). */
uint64_t *e2e_list_example_ids(dadc_client_t *c, size_t *n);

#endif
