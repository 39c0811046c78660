/*
 * The engine's threads: a small pool of workers that stay asleep between
 * jobs, so a training step can be split across the cores without paying
 * for thread creation on every batch.
 *
 * Why our own threads and not OpenBLAS's: the engine's matrices are
 * small (tens of rows), where BLAS threading spends more time handing
 * work over than computing. Splitting the batch across threads, each
 * with single-threaded BLAS, keeps every core busy on whole layers.
 */
#include "nn_internal.h"

#include <cblas.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

typedef struct pool {
    pthread_mutex_t busy;   /* held by the caller running a job */
    pthread_mutex_t lock;
    pthread_cond_t go;
    pthread_cond_t done;
    int nworkers;
    uint64_t generation;
    uint64_t born[NN_MAX_THREADS]; /* generation when worker i started */
    int pending;
    void (*fn)(int i, void *arg);
    void *arg;
    int n;
} pool_t;

static pool_t pool = {
    .busy = PTHREAD_MUTEX_INITIALIZER,
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .go = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
};

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

static void blas_single_cb(void)
{
    openblas_set_num_threads(1);
}

void nn_blas_single_thread(void)
{
    pthread_once(&blas_once, blas_single_cb);
}

int nn_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    if (n < 1)
        n = 1;
    return n > NN_MAX_THREADS ? NN_MAX_THREADS : (int)n;
}

static void *worker_main(void *p)
{
    int me = (int)(intptr_t)p;
    uint64_t seen;

    /* a job posted between pthread_create and here must not be missed,
     * so start from the generation current at creation */
    pthread_mutex_lock(&pool.lock);
    seen = pool.born[me];
    for (;;) {
        while (pool.generation == seen)
            pthread_cond_wait(&pool.go, &pool.lock);
        seen = pool.generation;
        if (me >= pool.n)
            continue;

        void (*fn)(int, void *) = pool.fn;
        void *arg = pool.arg;

        pthread_mutex_unlock(&pool.lock);
        fn(me, arg);
        pthread_mutex_lock(&pool.lock);
        if (--pool.pending == 0)
            pthread_cond_signal(&pool.done);
    }
    return NULL;
}

/* Start workers 1..n-1 that are not running yet (pool.lock held). */
static int pool_grow(int n)
{
    while (pool.nworkers < n - 1) {
        pthread_t t;
        pthread_attr_t attr;
        int rc;

        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pool.born[pool.nworkers + 1] = pool.generation;
        rc = pthread_create(&t, &attr, worker_main,
                            (void *)(intptr_t)(pool.nworkers + 1));
        pthread_attr_destroy(&attr);
        if (rc != 0)
            return -rc;
        pool.nworkers++;
    }
    return 0;
}

/* Fallback when the pool is in use by another caller: fresh threads. */
typedef struct spawn_arg {
    void (*fn)(int i, void *arg);
    void *arg;
    int i;
} spawn_arg_t;

static void *spawn_main(void *p)
{
    spawn_arg_t *s = p;

    s->fn(s->i, s->arg);
    return NULL;
}

static int parallel_spawn(int n, void (*fn)(int, void *), void *arg)
{
    pthread_t t[NN_MAX_THREADS];
    spawn_arg_t sa[NN_MAX_THREADS];
    int started = 1, rc = 0;

    for (int i = 1; i < n; i++) {
        sa[i] = (spawn_arg_t){fn, arg, i};
        if (pthread_create(&t[i], NULL, spawn_main, &sa[i]) != 0)
            break;
        started++;
    }
    fn(0, arg);
    for (int i = 1; i < started; i++)
        pthread_join(t[i], NULL);

    /* parts whose thread did not start run here, in order */
    for (int i = started; i < n; i++) {
        fn(i, arg);
        rc = -EAGAIN;
    }
    return rc;
}

int nn_parallel(int n, void (*fn)(int i, void *arg), void *arg)
{
    int rc;

    if (n > NN_MAX_THREADS)
        n = NN_MAX_THREADS;
    if (n <= 1) {
        fn(0, arg);
        return 0;
    }
    if (pthread_mutex_trylock(&pool.busy) != 0)
        return parallel_spawn(n, fn, arg);

    pthread_mutex_lock(&pool.lock);
    rc = pool_grow(n);
    if (rc < 0) {
        pthread_mutex_unlock(&pool.lock);
        pthread_mutex_unlock(&pool.busy);
        return parallel_spawn(n, fn, arg);
    }
    pool.fn = fn;
    pool.arg = arg;
    pool.n = n;
    pool.pending = n - 1;
    pool.generation++;
    pthread_cond_broadcast(&pool.go);
    pthread_mutex_unlock(&pool.lock);

    fn(0, arg);

    pthread_mutex_lock(&pool.lock);
    while (pool.pending > 0)
        pthread_cond_wait(&pool.done, &pool.lock);
    pthread_mutex_unlock(&pool.lock);
    pthread_mutex_unlock(&pool.busy);
    return 0;
}
