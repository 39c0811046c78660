#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/*
 * Example record layout (format 1), little-endian:
 *   0 format (1)   1 label   2 predicted   3 flags (1 fooled, 2 heldout)
 *   4 u32 model_version   8 u32 round   12 i64 created_ms
 *   20 u8 annotator length L (< STORE_ANNOTATOR_MAX)
 *   21 annotator bytes (no NUL)   21+L the 784 image bytes
 */
#define EXAMPLE_FORMAT 1
#define EXAMPLE_FIXED 21
#define EXAMPLE_RECORD_MAX (EXAMPLE_FIXED + STORE_ANNOTATOR_MAX + \
                            STORE_IMAGE_BYTES)

#define MAP_MAX_BYTES ((size_t)1 << 40)

/* The key that spreads example ids over the held-out buckets. Changing
 * it would move examples between splits, so it is part of the format. */
static const unsigned char heldout_key[16] = "dadc-heldout-v1";

struct store {
    MDB_env *env;
    MDB_dbi meta;
    MDB_dbi examples;
    MDB_dbi models;
    MDB_dbi weights;
    MDB_dbi rounds;
    /* Read calls hold it shared; growing the map holds it exclusively,
     * since mdb_env_set_mapsize needs no transaction open anywhere in
     * the process. */
    pthread_rwlock_t grow_lock;
    double heldout_share;
    int lock_fd;             /* DIR/lock, flock()ed for our lifetime */
};

typedef int (*store_write_fn)(store_t *s, MDB_txn *txn, void *ctx,
                              dadc_error_t *err);

void store_opts_default(store_opts_t *o)
{
    o->map_bytes = STORE_DEFAULT_MAP_BYTES;
    o->heldout_share = STORE_DEFAULT_HELDOUT_SHARE;
}

static int64_t store_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ */
/* Byte order helpers */

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_be64(const uint8_t *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

static void put_le(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int bytes)
{
    uint64_t v = 0;

    for (int i = bytes - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* ------------------------------------------------------------------ */
/* Errors */

static bool is_mdb_code(int rc)
{
    return rc >= MDB_KEYEXIST && rc <= MDB_LAST_ERRCODE;
}

/* Turn an LMDB return code into ours, with a message naming what. */
static int store_fail(dadc_error_t *err, int rc, const char *what)
{
    if (rc == 0)
        return 0;
    if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH ||
        rc == MDB_INCOMPATIBLE || rc == MDB_CORRUPTED)
        return dadc_error_set(err, DADC_EFORMAT,
                              "store: %s: not a usable DADC store: %s",
                              what, mdb_strerror(rc));
    if (is_mdb_code(rc))
        return dadc_error_set(err, DADC_ESTORE, "store: %s: %s", what,
                              mdb_strerror(rc));
    if (rc > 0)
        rc = -rc;
    /* errno values stay far below the project's own codes (-1001...) */
    if (rc > -1000)
        return dadc_error_set(err, rc, "store: %s: %s", what,
                              strerror(-rc));
    return rc; /* already one of ours, message set by whoever failed */
}

/* ------------------------------------------------------------------ */
/* Transactions */

/*
 * Begin a transaction with the grow lock held shared. When another
 * process has grown the map, adopt its size (with no transaction of
 * ours open) and try again.
 */
static int store_txn_begin(store_t *s, unsigned flags, MDB_txn **txn)
{
    int rc;

    pthread_rwlock_rdlock(&s->grow_lock);
    rc = mdb_txn_begin(s->env, NULL, flags, txn);
    if (rc == MDB_MAP_RESIZED) {
        pthread_rwlock_unlock(&s->grow_lock);
        pthread_rwlock_wrlock(&s->grow_lock);
        mdb_env_set_mapsize(s->env, 0);
        pthread_rwlock_unlock(&s->grow_lock);
        pthread_rwlock_rdlock(&s->grow_lock);
        rc = mdb_txn_begin(s->env, NULL, flags, txn);
    }
    return rc;
}

static int store_read_begin(store_t *s, MDB_txn **txn, dadc_error_t *err)
{
    int rc;

    rc = store_txn_begin(s, MDB_RDONLY, txn);
    if (rc != 0) {
        pthread_rwlock_unlock(&s->grow_lock);
        return store_fail(err, rc, "begin read transaction");
    }
    return 0;
}

static void store_read_end(store_t *s, MDB_txn *txn)
{
    mdb_txn_abort(txn);
    pthread_rwlock_unlock(&s->grow_lock);
}

/* Double the map. Called with no transaction of ours open. */
static int store_grow(store_t *s, dadc_error_t *err)
{
    MDB_envinfo info;
    size_t size;
    int rc;

    pthread_rwlock_wrlock(&s->grow_lock);
    mdb_env_info(s->env, &info);
    size = info.me_mapsize;
    if (size >= MAP_MAX_BYTES) {
        pthread_rwlock_unlock(&s->grow_lock);
        return dadc_error_set(err, DADC_ESTORE,
                              "store: map is full at %zu bytes", size);
    }
    rc = mdb_env_set_mapsize(s->env, size * 2);
    pthread_rwlock_unlock(&s->grow_lock);
    return store_fail(err, rc, "grow map");
}

/*
 * Run fn in one write transaction and commit it. When the map fills up
 * (at a put or at the commit), everything is aborted, the map doubled
 * and fn run again from the start, so fn must derive all it writes
 * from the transaction and its ctx.
 */
static int store_write(store_t *s, store_write_fn fn, void *ctx,
                       dadc_error_t *err)
{
    MDB_txn *txn;
    int rc;

    for (;;) {
        rc = store_txn_begin(s, 0, &txn);
        if (rc != 0) {
            pthread_rwlock_unlock(&s->grow_lock);
            return store_fail(err, rc, "begin write transaction");
        }
        rc = fn(s, txn, ctx, err);
        if (rc == 0)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
        pthread_rwlock_unlock(&s->grow_lock);

        if (rc != MDB_MAP_FULL)
            return store_fail(err, rc, "write");
        rc = store_grow(s, err);
        if (rc != 0)
            return rc;
    }
}

/* ------------------------------------------------------------------ */
/* Meta counters */

static int meta_get(MDB_txn *txn, store_t *s, const char *key, int bytes,
                    uint64_t *v, dadc_error_t *err)
{
    MDB_val k = { strlen(key), (void *)key }, d;
    int rc;

    rc = mdb_get(txn, s->meta, &k, &d);
    if (rc == MDB_NOTFOUND)
        return dadc_error_set(err, DADC_EFORMAT,
                              "store: meta: \"%s\" is missing", key);
    if (rc != 0)
        return rc;
    if (d.mv_size != (size_t)bytes)
        return dadc_error_set(err, DADC_EFORMAT,
                              "store: meta: \"%s\" has %zu bytes, not %d",
                              key, d.mv_size, bytes);
    *v = get_le(d.mv_data, bytes);
    return 0;
}

static int meta_get32(MDB_txn *txn, store_t *s, const char *key,
                      uint32_t *v, dadc_error_t *err)
{
    uint64_t x = 0;
    int rc = meta_get(txn, s, key, 4, &x, err);

    *v = (uint32_t)x;
    return rc;
}

static int meta_put(MDB_txn *txn, store_t *s, const char *key, int bytes,
                    uint64_t v)
{
    MDB_val k = { strlen(key), (void *)key }, d;
    uint8_t buf[8];

    put_le(buf, v, bytes);
    d.mv_size = (size_t)bytes;
    d.mv_data = buf;
    return mdb_put(txn, s->meta, &k, &d, 0);
}

/* ------------------------------------------------------------------ */
/* Example records */

bool store_heldout_pick(uint64_t id, double share)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    uint8_t in[8], out[8];
    uint64_t h;

    if (share <= 0.0)
        return false;
    if (share >= 1.0)
        return true;
    pthread_once(&once, (void (*)(void))sodium_init);
    put_be64(in, id);
    crypto_generichash(out, sizeof(out), in, sizeof(in), heldout_key,
                       sizeof(heldout_key));
    h = get_le(out, 8);
    return (double)(h % 1000000) < share * 1000000.0;
}

static size_t example_encode(const store_example_t *ex, uint8_t *p)
{
    size_t alen = strnlen(ex->annotator, STORE_ANNOTATOR_MAX - 1);

    p[0] = EXAMPLE_FORMAT;
    p[1] = ex->label;
    p[2] = ex->predicted;
    p[3] = (uint8_t)((ex->fooled ? 1 : 0) | (ex->heldout ? 2 : 0));
    put_le(p + 4, ex->model_version, 4);
    put_le(p + 8, ex->round, 4);
    put_le(p + 12, (uint64_t)ex->created_ms, 8);
    p[20] = (uint8_t)alen;
    memcpy(p + EXAMPLE_FIXED, ex->annotator, alen);
    memcpy(p + EXAMPLE_FIXED + alen, ex->image, STORE_IMAGE_BYTES);
    return EXAMPLE_FIXED + alen + STORE_IMAGE_BYTES;
}

static int example_decode(uint64_t id, const MDB_val *d,
                          store_example_t *ex, dadc_error_t *err)
{
    const uint8_t *p = d->mv_data;
    size_t alen;

    if (d->mv_size < EXAMPLE_FIXED || p[0] != EXAMPLE_FORMAT)
        goto bad;
    alen = p[20];
    if (alen >= STORE_ANNOTATOR_MAX ||
        d->mv_size != EXAMPLE_FIXED + alen + STORE_IMAGE_BYTES)
        goto bad;
    if (p[1] > 9 || p[2] > 9 || p[3] > 3 ||
        ((p[3] & 1) != 0) != (p[1] != p[2]))
        goto bad;

    ex->id = id;
    ex->label = p[1];
    ex->predicted = p[2];
    ex->fooled = (p[3] & 1) != 0;
    ex->heldout = (p[3] & 2) != 0;
    ex->model_version = (uint32_t)get_le(p + 4, 4);
    ex->round = (uint32_t)get_le(p + 8, 4);
    ex->created_ms = (int64_t)get_le(p + 12, 8);
    memcpy(ex->annotator, p + EXAMPLE_FIXED, alen);
    ex->annotator[alen] = '\0';
    memcpy(ex->image, p + EXAMPLE_FIXED + alen, STORE_IMAGE_BYTES);
    return 0;

bad:
    return dadc_error_set(err, DADC_EFORMAT,
                          "store: examples: record %llu is malformed "
                          "(%zu bytes)", (unsigned long long)id,
                          d->mv_size);
}

/* ------------------------------------------------------------------ */
/* Opening */

static int store_db_open(MDB_txn *txn, const char *name, unsigned flags,
                         MDB_dbi *dbi, dadc_error_t *err)
{
    int rc = mdb_dbi_open(txn, name, flags, dbi);

    if (rc == MDB_NOTFOUND)
        return dadc_error_set(err, DADC_EFORMAT,
                              "store: not a DADC store: database \"%s\" "
                              "is missing", name);
    if (rc == MDB_INCOMPATIBLE)
        return dadc_error_set(err, DADC_EFORMAT,
                              "store: not a DADC store: \"%s\" is not a "
                              "database", name);
    return rc;
}

static int store_dbs_open(store_t *s, MDB_txn *txn, unsigned flags,
                          dadc_error_t *err)
{
    int rc;

    if ((rc = store_db_open(txn, "examples", flags, &s->examples, err)) ||
        (rc = store_db_open(txn, "models", flags, &s->models, err)) ||
        (rc = store_db_open(txn, "weights", flags, &s->weights, err)) ||
        (rc = store_db_open(txn, "rounds", flags, &s->rounds, err)))
        return rc;
    return 0;
}

/* A brand-new environment: create the databases and the counters. */
static int store_init_fresh(store_t *s, MDB_txn *txn, dadc_error_t *err)
{
    int rc;

    rc = store_db_open(txn, "meta", MDB_CREATE, &s->meta, err);
    if (rc == 0)
        rc = store_dbs_open(s, txn, MDB_CREATE, err);
    if (rc == 0)
        rc = meta_put(txn, s, "schema", 4, STORE_SCHEMA_VERSION);
    if (rc == 0)
        rc = meta_put(txn, s, "current", 4, 0);
    if (rc == 0)
        rc = meta_put(txn, s, "next_version", 4, 1);
    if (rc == 0)
        rc = meta_put(txn, s, "next_example", 8, 1);
    if (rc == 0)
        rc = meta_put(txn, s, "collecting_round", 4, 1);
    return rc;
}

/* Whether the unnamed main database holds nothing at all. */
static int store_main_empty(MDB_txn *txn, bool *empty)
{
    MDB_dbi main_dbi;
    MDB_stat st;
    int rc;

    rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
    if (rc == 0)
        rc = mdb_stat(txn, main_dbi, &st);
    if (rc == 0)
        *empty = st.ms_entries == 0;
    return rc;
}

static int store_check_schema(store_t *s, MDB_txn *txn, dadc_error_t *err)
{
    uint32_t schema = 0;
    int rc;

    rc = meta_get32(txn, s, "schema", &schema, err);
    if (rc != 0)
        return rc;
    if (schema != STORE_SCHEMA_VERSION)
        return dadc_error_set(err, DADC_EFORMAT,
                              "store: schema version %u, this program "
                              "reads version %d", schema,
                              STORE_SCHEMA_VERSION);
    return store_dbs_open(s, txn, 0, err);
}

/* Close a round that a dead process left running. */
static int store_round_interrupted(store_t *s, MDB_txn *txn,
                                   dadc_error_t *err)
{
    static const char reason[] =
        "interrupted: the server stopped before the round finished";
    uint32_t collecting = 0;
    uint8_t key[4];
    MDB_val k = { 4, key }, d;
    Dadc__RoundInfo *ri, copy;
    uint8_t *buf;
    int rc;

    rc = meta_get32(txn, s, "collecting_round", &collecting, err);
    if (rc != 0 || collecting <= 1)
        return rc;
    put_be32(key, collecting - 1);
    rc = mdb_get(txn, s->rounds, &k, &d);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? 0 : rc;
    ri = dadc__round_info__unpack(NULL, d.mv_size, d.mv_data);
    if (ri == NULL || !ri->running) {
        dadc__round_info__free_unpacked(ri, NULL);
        return 0;
    }

    copy = *ri;
    copy.running = false;
    copy.promoted = false;
    copy.reason = (char *)reason;
    d.mv_size = dadc__round_info__get_packed_size(&copy);
    buf = malloc(d.mv_size ? d.mv_size : 1);
    if (buf == NULL) {
        dadc__round_info__free_unpacked(ri, NULL);
        return -ENOMEM;
    }
    dadc__round_info__pack(&copy, buf);
    d.mv_data = buf;
    rc = mdb_put(txn, s->rounds, &k, &d, 0);
    free(buf);
    dadc__round_info__free_unpacked(ri, NULL);
    return rc;
}

static int store_open_fn(store_t *s, MDB_txn *txn, void *ctx,
                         dadc_error_t *err)
{
    bool empty = false;
    int rc;

    (void)ctx;
    rc = mdb_dbi_open(txn, "meta", 0, &s->meta);
    if (rc == MDB_NOTFOUND) {
        rc = store_main_empty(txn, &empty);
        if (rc != 0)
            return rc;
        if (!empty)
            return dadc_error_set(err, DADC_EFORMAT,
                                  "store: not a DADC store: the LMDB "
                                  "environment holds other data");
        return store_init_fresh(s, txn, err);
    }
    if (rc == MDB_INCOMPATIBLE)
        return dadc_error_set(err, DADC_EFORMAT,
                              "store: not a DADC store: \"meta\" is not "
                              "a database");
    if (rc != 0)
        return rc;
    rc = store_check_schema(s, txn, err);
    if (rc != 0)
        return rc;
    return store_round_interrupted(s, txn, err);
}

/*
 * LMDB maps the file and trusts its meta page: a data file cut short
 * (a bad copy, a full disk outside LMDB's control) would fault on the
 * first page past its end. Refuse it up front instead.
 */
static int store_check_size(store_t *s, const char *dir, dadc_error_t *err)
{
    MDB_envinfo info;
    MDB_stat st;
    struct stat fst;
    char path[4096];
    uint64_t need;

    mdb_env_info(s->env, &info);
    mdb_env_stat(s->env, &st);
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    if (stat(path, &fst) != 0)
        return dadc_error_set(err, -errno, "store: %s: %s", path,
                              strerror(errno));
    need = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
    if ((uint64_t)fst.st_size < need)
        return dadc_error_set(err, DADC_ETRUNC,
                              "store: %s is truncated: %lld bytes, its "
                              "pages need %llu", path,
                              (long long)fst.st_size,
                              (unsigned long long)need);
    return 0;
}

/* The pid a lock holder wrote into its lock file, or 0. */
static long store_lock_owner(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return strtol(buf, NULL, 10);
}

/* Hold an exclusive flock on DIR/lock so that one process at a time
 * serves the directory; the kernel drops it when the process dies, so a
 * killed server leaves nothing stale behind. */
static int store_lock(store_t *s, const char *dir, dadc_error_t *err)
{
    char path[4096], pid[32];
    int fd, len;

    if (snprintf(path, sizeof(path), "%s/lock", dir) >= (int)sizeof(path))
        return dadc_error_set(err, -ENAMETOOLONG, "%s: path too long", dir);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return dadc_error_set(err, -errno, "%s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        long owner = store_lock_owner(fd);

        close(fd);
        if (e != EWOULDBLOCK)
            return dadc_error_set(err, -e, "%s: lock: %s", path,
                                  strerror(e));
        if (owner > 0)
            return dadc_error_set(err, -EBUSY, "%s is in use by another "
                                  "server (pid %ld)", dir, owner);
        return dadc_error_set(err, -EBUSY, "%s is in use by another "
                              "server", dir);
    }
    len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        int e = errno;

        close(fd);
        return dadc_error_set(err, -e, "%s: %s", path, strerror(e));
    }
    s->lock_fd = fd;
    return 0;
}

static int store_env_open(store_t *s, const char *dir, size_t map_bytes,
                          dadc_error_t *err)
{
    struct stat st;
    int rc;

    if (stat(dir, &st) != 0)
        return dadc_error_set(err, -errno, "store: %s: %s", dir,
                              strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return dadc_error_set(err, -ENOTDIR, "store: %s: not a directory",
                              dir);
    rc = store_lock(s, dir, err);
    if (rc != 0)
        return rc;

    rc = mdb_env_create(&s->env);
    if (rc != 0)
        return store_fail(err, rc, "create environment");
    mdb_env_set_maxdbs(s->env, 8);
    mdb_env_set_mapsize(s->env, map_bytes);
    /* MDB_NOTLS: read transactions are used from worker threads too. */
    rc = mdb_env_open(s->env, dir, MDB_NOTLS, 0644);
    if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH)
        return dadc_error_set(err, DADC_EFORMAT,
                              "store: %s: data.mdb is not an LMDB "
                              "environment this program can read (%s)",
                              dir, mdb_strerror(rc));
    if (rc != 0)
        return store_fail(err, rc, "open environment");
    return store_check_size(s, dir, err);
}

int store_open(store_t **out, const char *dir, const store_opts_t *opts,
               dadc_error_t *err)
{
    store_opts_t o;
    store_t *s;
    int rc;

    *out = NULL;
    store_opts_default(&o);
    if (opts != NULL)
        o = *opts;
    if (o.map_bytes == 0)
        o.map_bytes = STORE_DEFAULT_MAP_BYTES;
    if (!(o.heldout_share >= 0.0 && o.heldout_share <= 1.0))
        return dadc_error_set(err, DADC_ERANGE,
                              "store: held-out share %g is not in 0..1",
                              o.heldout_share);

    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    pthread_rwlock_init(&s->grow_lock, NULL);
    s->heldout_share = o.heldout_share;
    s->lock_fd = -1;

    rc = store_env_open(s, dir, o.map_bytes, err);
    if (rc != 0)
        goto fail_env;
    rc = store_write(s, store_open_fn, NULL, err);
    if (rc != 0)
        goto fail_env;
    *out = s;
    return 0;

fail_env:
    if (s->env != NULL)
        mdb_env_close(s->env);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    pthread_rwlock_destroy(&s->grow_lock);
    free(s);
    return rc;
}

void store_close(store_t *s)
{
    if (s == NULL)
        return;
    mdb_env_close(s->env);
    close(s->lock_fd);
    pthread_rwlock_destroy(&s->grow_lock);
    free(s);
}

int store_counters_get(store_t *s, store_counters_t *out, dadc_error_t *err)
{
    MDB_txn *txn;
    MDB_envinfo info;
    MDB_stat st;
    MDB_cursor *cur;
    MDB_val k, d;
    uint32_t next_version = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = store_read_begin(s, &txn, err);
    if (rc != 0)
        return rc;
    if ((rc = meta_get32(txn, s, "current", &out->current_version, err)) ||
        (rc = meta_get32(txn, s, "next_version", &next_version, err)) ||
        (rc = meta_get32(txn, s, "collecting_round",
                         &out->collecting_round, err)))
        goto done;
    out->latest_version = next_version - 1;
    out->latest_round = out->collecting_round - 1;

    rc = mdb_stat(txn, s->examples, &st);
    if (rc != 0)
        goto done;
    out->examples = st.ms_entries;
    rc = mdb_cursor_open(txn, s->examples, &cur);
    if (rc != 0)
        goto done;
    rc = mdb_cursor_get(cur, &k, &d, MDB_LAST);
    if (rc == 0 && k.mv_size == 8)
        out->last_example_id = get_be64(k.mv_data);
    mdb_cursor_close(cur);
    rc = rc == MDB_NOTFOUND ? 0 : rc;
    mdb_env_info(s->env, &info);
    out->map_bytes = info.me_mapsize;

done:
    store_read_end(s, txn);
    return store_fail(err, rc, "read counters");
}

/* ------------------------------------------------------------------ */
/* Examples */

typedef struct put_ctx {
    store_example_t *ex;
    size_t n;
} put_ctx_t;

static int store_put_fn(store_t *s, MDB_txn *txn, void *ctx,
                        dadc_error_t *err)
{
    put_ctx_t *pc = ctx;
    uint64_t next = 0;
    uint32_t collecting = 0;
    uint8_t key[8], rec[EXAMPLE_RECORD_MAX];
    MDB_val k = { 8, key }, d = { 0, rec };
    int rc;

    if ((rc = meta_get(txn, s, "next_example", 8, &next, err)) ||
        (rc = meta_get32(txn, s, "collecting_round", &collecting, err)))
        return rc;

    for (size_t i = 0; i < pc->n; i++) {
        store_example_t *ex = &pc->ex[i];

        ex->id = next + i;
        ex->fooled = ex->predicted != ex->label;
        ex->heldout = store_heldout_pick(ex->id, s->heldout_share);
        ex->round = collecting;
        put_be64(key, ex->id);
        d.mv_size = example_encode(ex, rec);
        rc = mdb_put(txn, s->examples, &k, &d, MDB_APPEND);
        if (rc != 0)
            return rc;
    }
    return meta_put(txn, s, "next_example", 8, next + pc->n);
}

/*
 * End name within the field and drop a multi-byte UTF-8 character that
 * a cut (ours, or the caller's snprintf) left incomplete at its end.
 */
static void annotator_cut(char *name)
{
    size_t len = strnlen(name, STORE_ANNOTATOR_MAX - 1), lead = len, need;
    unsigned char c;

    name[len] = '\0';
    while (lead > 0 && ((unsigned char)name[lead - 1] & 0xc0) == 0x80)
        lead--;
    if (lead == 0)
        return;
    c = (unsigned char)name[lead - 1];
    need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    if (len - (lead - 1) < need)
        name[lead - 1] = '\0';
}

int store_examples_put(store_t *s, store_example_t *ex, size_t n,
                       dadc_error_t *err)
{
    put_ctx_t pc = { ex, n };
    int64_t now = store_now_ms();

    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (ex[i].label > 9 || ex[i].predicted > 9)
            return dadc_error_set(err, DADC_ERANGE,
                                  "example %zu: label %u or "
                                  "prediction %u is not a digit", i,
                                  ex[i].label, ex[i].predicted);
        if (ex[i].created_ms == 0)
            ex[i].created_ms = now;
        annotator_cut(ex[i].annotator);
    }
    return store_write(s, store_put_fn, &pc, err);
}

int store_example_get(store_t *s, uint64_t id, store_example_t *out,
                      dadc_error_t *err)
{
    MDB_txn *txn;
    uint8_t key[8];
    MDB_val k = { 8, key }, d;
    int rc;

    rc = store_read_begin(s, &txn, err);
    if (rc != 0)
        return rc;
    put_be64(key, id);
    rc = mdb_get(txn, s->examples, &k, &d);
    if (rc == 0)
        rc = example_decode(id, &d, out, err);
    else if (rc == MDB_NOTFOUND)
        rc = dadc_error_set(err, DADC_ENOTFOUND,
                            "no example %llu",
                            (unsigned long long)id);
    store_read_end(s, txn);
    return store_fail(err, rc, "read example");
}

/* Decode the record under the cursor, checking its key. */
static int example_at(const MDB_val *k, const MDB_val *d,
                      store_example_t *ex, dadc_error_t *err)
{
    if (k->mv_size != 8)
        return dadc_error_set(err, DADC_EFORMAT,
                              "store: examples: a key of %zu bytes",
                              k->mv_size);
    return example_decode(get_be64(k->mv_data), d, ex, err);
}

int store_examples_list(store_t *s, uint64_t after_id, size_t limit,
                        store_example_t *out, size_t *n,
                        uint64_t *next_after_id, uint64_t *total,
                        dadc_error_t *err)
{
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    MDB_stat st;
    uint8_t key[8];
    MDB_val k = { 8, key }, d;
    int rc;

    *n = 0;
    if (next_after_id != NULL)
        *next_after_id = 0;
    rc = store_read_begin(s, &txn, err);
    if (rc != 0)
        return rc;
    rc = mdb_stat(txn, s->examples, &st);
    if (rc == 0 && total != NULL)
        *total = st.ms_entries;
    if (rc == 0)
        rc = mdb_cursor_open(txn, s->examples, &cur);
    if (rc != 0)
        goto done;

    put_be64(key, after_id == UINT64_MAX ? after_id : after_id + 1);
    rc = mdb_cursor_get(cur, &k, &d, MDB_SET_RANGE);
    while (rc == 0 && *n < limit) {
        rc = example_at(&k, &d, &out[*n], err);
        if (rc != 0)
            goto done;
        (*n)++;
        rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT);
    }
    if (rc == 0 && *n > 0 && next_after_id != NULL)
        *next_after_id = out[*n - 1].id;
    if (rc == MDB_NOTFOUND)
        rc = 0;

done:
    mdb_cursor_close(cur);
    store_read_end(s, txn);
    return store_fail(err, rc, "list examples");
}

int store_examples_scan(store_t *s, store_example_cb cb, void *user,
                        dadc_error_t *err)
{
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    MDB_val k, d;
    store_example_t *ex;
    int rc;

    ex = malloc(sizeof(*ex));
    if (ex == NULL)
        return -ENOMEM;
    rc = store_read_begin(s, &txn, err);
    if (rc != 0)
        goto fail_txn;
    rc = mdb_cursor_open(txn, s->examples, &cur);
    if (rc == 0)
        rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST);
    while (rc == 0) {
        rc = example_at(&k, &d, ex, err);
        if (rc == 0)
            rc = cb(ex, user);
        if (rc != 0)
            break;
        rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;
    mdb_cursor_close(cur);
    store_read_end(s, txn);

fail_txn:
    free(ex);
    return store_fail(err, rc, "scan examples");
}

/* ------------------------------------------------------------------ */
/* Packed protobuf records */

static int record_put(MDB_txn *txn, MDB_dbi dbi, uint32_t id,
                      const ProtobufCMessage *msg)
{
    uint8_t key[4];
    MDB_val k = { 4, key }, d;
    uint8_t *buf;
    int rc;

    put_be32(key, id);
    d.mv_size = protobuf_c_message_get_packed_size(msg);
    buf = malloc(d.mv_size ? d.mv_size : 1);
    if (buf == NULL)
        return -ENOMEM;
    protobuf_c_message_pack(msg, buf);
    d.mv_data = buf;
    rc = mdb_put(txn, dbi, &k, &d, 0);
    free(buf);
    return rc;
}

static int model_unpack(uint32_t version, const MDB_val *d,
                        uint32_t current, Dadc__ModelInfo **out,
                        dadc_error_t *err)
{
    Dadc__ModelInfo *mi = dadc__model_info__unpack(NULL, d->mv_size,
                                                   d->mv_data);

    if (mi == NULL || mi->version != version) {
        dadc__model_info__free_unpacked(mi, NULL);
        return dadc_error_set(err, DADC_EFORMAT,
                              "store: models: record %u is malformed",
                              version);
    }
    mi->current = version == current;
    *out = mi;
    return 0;
}

static int round_unpack(uint32_t round, const MDB_val *d,
                        Dadc__RoundInfo **out, dadc_error_t *err)
{
    Dadc__RoundInfo *ri = dadc__round_info__unpack(NULL, d->mv_size,
                                                   d->mv_data);

    if (ri == NULL || ri->round != round) {
        dadc__round_info__free_unpacked(ri, NULL);
        return dadc_error_set(err, DADC_EFORMAT,
                              "store: rounds: record %u is malformed",
                              round);
    }
    *out = ri;
    return 0;
}

static int round_read(store_t *s, MDB_txn *txn, uint32_t round,
                      Dadc__RoundInfo **out, dadc_error_t *err)
{
    uint8_t key[4];
    MDB_val k = { 4, key }, d;
    int rc;

    put_be32(key, round);
    rc = mdb_get(txn, s->rounds, &k, &d);
    if (rc == MDB_NOTFOUND)
        return dadc_error_set(err, DADC_ENOTFOUND, "no round %u",
                              round);
    if (rc != 0)
        return rc;
    return round_unpack(round, &d, out, err);
}

/* ------------------------------------------------------------------ */
/* Models */

typedef struct model_ctx {
    const Dadc__ModelInfo *info;
    const uint8_t *st;
    size_t st_len;
    const Dadc__RoundInfo *round;
    bool make_current;
    uint32_t version;
} model_ctx_t;

/*
 * The running round a new version finishes must exist and be running.
 * What the caller left empty (trigger, start, base) comes from the
 * record store_round_begin wrote; the record is freed by the caller.
 */
static int model_round_merge(store_t *s, MDB_txn *txn,
                             Dadc__RoundInfo *round,
                             Dadc__RoundInfo **begun, dadc_error_t *err)
{
    Dadc__RoundInfo *ri = NULL;
    int rc;

    rc = round_read(s, txn, round->round, &ri, err);
    if (rc != 0)
        return rc;
    *begun = ri;
    if (!ri->running)
        return dadc_error_set(err, DADC_ERANGE,
                              "round %u has already finished",
                              round->round);
    if (round->trigger == NULL || round->trigger[0] == '\0')
        round->trigger = ri->trigger;
    if (round->started_unix_ms == 0)
        round->started_unix_ms = ri->started_unix_ms;
    if (round->base_version == 0)
        round->base_version = ri->base_version;
    if (round->finished_unix_ms == 0)
        round->finished_unix_ms = store_now_ms();
    return 0;
}

static int model_round_put(store_t *s, MDB_txn *txn,
                           const Dadc__RoundInfo *given, uint32_t version,
                           dadc_error_t *err)
{
    Dadc__RoundInfo round = *given, *begun = NULL;
    int rc;

    rc = model_round_merge(s, txn, &round, &begun, err);
    if (rc == 0) {
        round.running = false;
        round.candidate_version = version;
        rc = record_put(txn, s->rounds, round.round, &round.base);
    }
    dadc__round_info__free_unpacked(begun, NULL);
    return rc;
}

static int store_model_fn(store_t *s, MDB_txn *txn, void *ctx,
                          dadc_error_t *err)
{
    model_ctx_t *mc = ctx;
    Dadc__ModelInfo info = *mc->info;
    uint8_t key[4];
    MDB_val k = { 4, key }, d = { mc->st_len, (void *)mc->st };
    int rc;

    rc = meta_get32(txn, s, "next_version", &mc->version, err);
    if (rc != 0)
        return rc;
    info.version = mc->version;
    info.size_bytes = mc->st_len;
    info.current = false;
    put_be32(key, mc->version);
    if ((rc = mdb_put(txn, s->weights, &k, &d, MDB_NOOVERWRITE)) ||
        (rc = record_put(txn, s->models, mc->version, &info.base)))
        return rc;

    if (mc->round != NULL &&
        (rc = model_round_put(s, txn, mc->round, mc->version, err)))
        return rc;

    if (mc->make_current && (rc = meta_put(txn, s, "current", 4,
                                           mc->version)))
        return rc;
    return meta_put(txn, s, "next_version", 4, mc->version + 1);
}

int store_model_add(store_t *s, const Dadc__ModelInfo *info,
                    const uint8_t *st, size_t st_len,
                    const Dadc__RoundInfo *round, bool make_current,
                    uint32_t *version_out, dadc_error_t *err)
{
    model_ctx_t mc = { info, st, st_len, round, make_current, 0 };
    int rc;

    if (st == NULL || st_len == 0)
        return dadc_error_set(err, DADC_ERANGE,
                              "a model version needs its weights");
    rc = store_write(s, store_model_fn, &mc, err);
    if (rc == 0 && version_out != NULL)
        *version_out = mc.version;
    return rc;
}

int store_model_get(store_t *s, uint32_t version, Dadc__ModelInfo **out,
                    dadc_error_t *err)
{
    MDB_txn *txn;
    uint8_t key[4];
    MDB_val k = { 4, key }, d;
    uint32_t current = 0;
    int rc;

    *out = NULL;
    rc = store_read_begin(s, &txn, err);
    if (rc != 0)
        return rc;
    put_be32(key, version);
    rc = meta_get32(txn, s, "current", &current, err);
    if (rc == 0)
        rc = mdb_get(txn, s->models, &k, &d);
    if (rc == 0)
        rc = model_unpack(version, &d, current, out, err);
    else if (rc == MDB_NOTFOUND)
        rc = dadc_error_set(err, DADC_ENOTFOUND,
                            "no model version %u", version);
    store_read_end(s, txn);
    return store_fail(err, rc, "read model");
}

/* Collect every record of a u32-keyed protobuf database. */
typedef int (*record_unpack_fn)(uint32_t id, const MDB_val *d,
                                uint32_t current, void **out,
                                dadc_error_t *err);

static int records_list(store_t *s, MDB_dbi dbi, record_unpack_fn unpack,
                        void ***out, size_t *n, dadc_error_t *err)
{
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    MDB_stat st;
    MDB_val k, d;
    uint32_t current = 0;
    int rc;

    *out = NULL;
    *n = 0;
    rc = store_read_begin(s, &txn, err);
    if (rc != 0)
        return rc;
    if ((rc = meta_get32(txn, s, "current", &current, err)) ||
        (rc = mdb_stat(txn, dbi, &st)) ||
        (rc = mdb_cursor_open(txn, dbi, &cur)))
        goto done;
    *out = calloc(st.ms_entries + 1, sizeof(void *));
    if (*out == NULL) {
        rc = -ENOMEM;
        goto done;
    }

    rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST);
    while (rc == 0 && *n < st.ms_entries) {
        if (k.mv_size != 4) {
            rc = dadc_error_set(err, DADC_EFORMAT,
                                "store: a record key of %zu bytes",
                                k.mv_size);
            break;
        }
        rc = unpack(get_be32(k.mv_data), &d, current, &(*out)[*n], err);
        if (rc != 0)
            break;
        (*n)++;
        rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND)
        rc = 0;

done:
    mdb_cursor_close(cur);
    store_read_end(s, txn);
    return store_fail(err, rc, "list records");
}

static int model_unpack_any(uint32_t id, const MDB_val *d, uint32_t current,
                            void **out, dadc_error_t *err)
{
    return model_unpack(id, d, current, (Dadc__ModelInfo **)out, err);
}

static int round_unpack_any(uint32_t id, const MDB_val *d, uint32_t current,
                            void **out, dadc_error_t *err)
{
    (void)current;
    return round_unpack(id, d, (Dadc__RoundInfo **)out, err);
}

int store_models_list(store_t *s, Dadc__ModelInfo ***out, size_t *n,
                      dadc_error_t *err)
{
    void **list;
    int rc;

    rc = records_list(s, s->models, model_unpack_any, &list, n, err);
    if (rc != 0) {
        store_models_free((Dadc__ModelInfo **)list, *n);
        *out = NULL;
        *n = 0;
        return rc;
    }
    *out = (Dadc__ModelInfo **)list;
    return 0;
}

void store_models_free(Dadc__ModelInfo **models, size_t n)
{
    if (models == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        dadc__model_info__free_unpacked(models[i], NULL);
    free(models);
}

int store_weights_get(store_t *s, uint32_t version, uint8_t **buf,
                      size_t *len, dadc_error_t *err)
{
    MDB_txn *txn;
    uint8_t key[4];
    MDB_val k = { 4, key }, d;
    int rc;

    *buf = NULL;
    *len = 0;
    rc = store_read_begin(s, &txn, err);
    if (rc != 0)
        return rc;
    put_be32(key, version);
    rc = mdb_get(txn, s->weights, &k, &d);
    if (rc == MDB_NOTFOUND) {
        rc = dadc_error_set(err, DADC_ENOTFOUND,
                            "no weights for version %u", version);
    } else if (rc == 0) {
        *buf = malloc(d.mv_size ? d.mv_size : 1);
        if (*buf == NULL)
            rc = -ENOMEM;
        else
            memcpy(*buf, d.mv_data, d.mv_size);
        *len = d.mv_size;
    }
    store_read_end(s, txn);
    if (rc != 0)
        *len = 0;
    return store_fail(err, rc, "read weights");
}

typedef struct rollback_ctx {
    uint32_t version;
    uint32_t previous;
} rollback_ctx_t;

static int store_rollback_fn(store_t *s, MDB_txn *txn, void *ctx,
                             dadc_error_t *err)
{
    rollback_ctx_t *rb = ctx;
    uint8_t key[4];
    MDB_val k = { 4, key }, d;
    int rc;

    put_be32(key, rb->version);
    rc = mdb_get(txn, s->models, &k, &d);
    if (rc == MDB_NOTFOUND)
        return dadc_error_set(err, DADC_ENOTFOUND,
                              "no model version %u", rb->version);
    if (rc != 0)
        return rc;
    rc = meta_get32(txn, s, "current", &rb->previous, err);
    if (rc != 0)
        return rc;
    return meta_put(txn, s, "current", 4, rb->version);
}

int store_rollback(store_t *s, uint32_t version, uint32_t *previous,
                   dadc_error_t *err)
{
    rollback_ctx_t rb = { version, 0 };
    int rc;

    rc = store_write(s, store_rollback_fn, &rb, err);
    if (rc == 0 && previous != NULL)
        *previous = rb.previous;
    return rc;
}

/* ------------------------------------------------------------------ */
/* Rounds */

typedef struct round_ctx {
    Dadc__RoundInfo info;
    const char *fail_reason;
} round_ctx_t;

static int store_round_begin_fn(store_t *s, MDB_txn *txn, void *ctx,
                                dadc_error_t *err)
{
    round_ctx_t *rx = ctx;
    uint32_t collecting = 0;
    Dadc__RoundInfo *prev = NULL;
    bool running = false;
    int rc;

    rc = meta_get32(txn, s, "collecting_round", &collecting, err);
    if (rc != 0)
        return rc;
    if (collecting > 1) {
        rc = round_read(s, txn, collecting - 1, &prev, err);
        if (rc != 0 && rc != DADC_ENOTFOUND)
            return rc;
        running = prev != NULL && prev->running;
        dadc__round_info__free_unpacked(prev, NULL);
        if (running)
            return dadc_error_set(err, DADC_EBUSY,
                                  "round %u is still running",
                                  collecting - 1);
    }

    rx->info.round = collecting;
    rc = record_put(txn, s->rounds, collecting, &rx->info.base);
    if (rc != 0)
        return rc;
    return meta_put(txn, s, "collecting_round", 4, collecting + 1);
}

int store_round_begin(store_t *s, const char *trigger,
                      uint32_t base_version, int64_t started_ms,
                      uint32_t *round_out, dadc_error_t *err)
{
    round_ctx_t ctx;
    int rc;

    dadc__round_info__init(&ctx.info);
    ctx.info.trigger = (char *)(trigger != NULL ? trigger : "");
    ctx.info.base_version = base_version;
    ctx.info.started_unix_ms = started_ms ? started_ms : store_now_ms();
    ctx.info.running = true;
    ctx.fail_reason = NULL;
    rc = store_write(s, store_round_begin_fn, &ctx, err);
    if (rc == 0 && round_out != NULL)
        *round_out = ctx.info.round;
    return rc;
}

static int store_round_fail_fn(store_t *s, MDB_txn *txn, void *ctx,
                               dadc_error_t *err)
{
    round_ctx_t *rx = ctx;
    Dadc__RoundInfo *ri = NULL, copy;
    int rc;

    rc = round_read(s, txn, rx->info.round, &ri, err);
    if (rc != 0)
        return rc;
    copy = *ri;
    copy.running = false;
    copy.promoted = false;
    copy.finished_unix_ms = store_now_ms();
    copy.reason = (char *)rx->fail_reason;
    rc = record_put(txn, s->rounds, copy.round, &copy.base);
    dadc__round_info__free_unpacked(ri, NULL);
    return rc;
}

int store_round_fail(store_t *s, uint32_t round, const char *reason,
                     dadc_error_t *err)
{
    round_ctx_t ctx;

    dadc__round_info__init(&ctx.info);
    ctx.info.round = round;
    ctx.fail_reason = reason != NULL ? reason : "";
    return store_write(s, store_round_fail_fn, &ctx, err);
}

int store_round_get(store_t *s, uint32_t round, Dadc__RoundInfo **out,
                    dadc_error_t *err)
{
    MDB_txn *txn;
    int rc;

    *out = NULL;
    rc = store_read_begin(s, &txn, err);
    if (rc != 0)
        return rc;
    rc = round_read(s, txn, round, out, err);
    store_read_end(s, txn);
    return store_fail(err, rc, "read round");
}

int store_rounds_list(store_t *s, Dadc__RoundInfo ***out, size_t *n,
                      dadc_error_t *err)
{
    void **list;
    int rc;

    rc = records_list(s, s->rounds, round_unpack_any, &list, n, err);
    if (rc != 0) {
        store_rounds_free((Dadc__RoundInfo **)list, *n);
        *out = NULL;
        *n = 0;
        return rc;
    }
    *out = (Dadc__RoundInfo **)list;
    return 0;
}

void store_rounds_free(Dadc__RoundInfo **rounds, size_t n)
{
    if (rounds == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        dadc__round_info__free_unpacked(rounds[i], NULL);
    free(rounds);
}
