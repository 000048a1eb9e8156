/*
 * walbuf: one write per WAL flush instead of two per frame (walbuf.h says when it is safe).
 */
#include "audit/walbuf.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

/* The unix VFS writes at most this much per call (it masks a write's length with 0x1ffff: a
 * longer one is cut, and reported as a full disk). A larger transaction goes in pieces. */
#define WALBUF_CAP 0x1ffff

struct wb_file {
    sqlite3_file base;
    sqlite3_file *real; /* the default VFS's file, in the same allocation after this struct */
    bool wal;           /* writes are gathered (the WAL); any other file passes straight on */
    char *buf;
    sqlite3_int64 off; /* where buf[0] goes in the file */
    int len;
};

/* The real file follows ours, aligned. */
#define WB_HDR ((sizeof(struct wb_file) + 15) / 16 * 16)

static sqlite3_vfs vfs;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int registered = -1;
static _Atomic uint64_t asked, written;

static sqlite3_file *real(sqlite3_file *f)
{
    return ((struct wb_file *)f)->real;
}

/* Write what is gathered, with one call. */
static int flush(struct wb_file *w)
{
    if (w->len == 0)
        return SQLITE_OK;
    int rc = w->real->pMethods->xWrite(w->real, w->buf, w->len, w->off);
    atomic_fetch_add_explicit(&written, 1, memory_order_relaxed);
    w->len = 0;
    return rc;
}

static int wb_close(sqlite3_file *f)
{
    struct wb_file *w = (struct wb_file *)f;
    int rc = flush(w);
    int rc2 = w->real->pMethods->xClose(w->real);
    free(w->buf);
    w->buf = NULL;
    return rc != SQLITE_OK ? rc : rc2;
}

/* A failed flush fails the call that needed it (the open transaction then rolls back), with
 * an error that call may return. */
static int wb_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off)
{
    int rc = flush((struct wb_file *)f);
    return rc != SQLITE_OK ? SQLITE_IOERR_READ : real(f)->pMethods->xRead(real(f), p, n, off);
}

static int wb_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off)
{
    struct wb_file *w = (struct wb_file *)f;
    if (!w->wal)
        return w->real->pMethods->xWrite(w->real, p, n, off);
    atomic_fetch_add_explicit(&asked, 1, memory_order_relaxed);
    if (w->len > 0 && (off != w->off + w->len || w->len + n > WALBUF_CAP)) {
        int rc = flush(w);
        if (rc != SQLITE_OK)
            return rc;
    }
    if (n > WALBUF_CAP) {
        atomic_fetch_add_explicit(&written, 1, memory_order_relaxed);
        return w->real->pMethods->xWrite(w->real, p, n, off);
    }
    if (!w->buf && !(w->buf = malloc(WALBUF_CAP)))
        return SQLITE_NOMEM;
    if (w->len == 0)
        w->off = off;
    memcpy(w->buf + w->len, p, (size_t)n);
    w->len += n;
    return SQLITE_OK;
}

static int wb_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    int rc = flush((struct wb_file *)f);
    return rc != SQLITE_OK ? rc : real(f)->pMethods->xTruncate(real(f), size);
}

static int wb_sync(sqlite3_file *f, int flags)
{
    int rc = flush((struct wb_file *)f);
    return rc != SQLITE_OK ? rc : real(f)->pMethods->xSync(real(f), flags);
}

static int wb_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    int rc = flush((struct wb_file *)f);
    return rc != SQLITE_OK ? SQLITE_IOERR_FSTAT : real(f)->pMethods->xFileSize(real(f), size);
}

/* The rest pass straight on: locks, sizes of sectors and the shared memory do not depend on
 * what is gathered (the WAL takes no file locks; SQLite maps only the database, flushed above
 * if it ever fetched the WAL). */
static int wb_lock(sqlite3_file *f, int l)
{
    return real(f)->pMethods->xLock(real(f), l);
}

static int wb_unlock(sqlite3_file *f, int l)
{
    return real(f)->pMethods->xUnlock(real(f), l);
}

static int wb_check_reserved(sqlite3_file *f, int *out)
{
    return real(f)->pMethods->xCheckReservedLock(real(f), out);
}

static int wb_file_control(sqlite3_file *f, int op, void *arg)
{
    return real(f)->pMethods->xFileControl(real(f), op, arg);
}

static int wb_sector_size(sqlite3_file *f)
{
    return real(f)->pMethods->xSectorSize(real(f));
}

static int wb_device(sqlite3_file *f)
{
    return real(f)->pMethods->xDeviceCharacteristics(real(f));
}

static int wb_shm_map(sqlite3_file *f, int pg, int sz, int extend, void volatile **pp)
{
    return real(f)->pMethods->xShmMap(real(f), pg, sz, extend, pp);
}

static int wb_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    return real(f)->pMethods->xShmLock(real(f), offset, n, flags);
}

static void wb_shm_barrier(sqlite3_file *f)
{
    real(f)->pMethods->xShmBarrier(real(f));
}

static int wb_shm_unmap(sqlite3_file *f, int del)
{
    return real(f)->pMethods->xShmUnmap(real(f), del);
}

static int wb_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    int rc = flush((struct wb_file *)f);
    return rc != SQLITE_OK ? rc : real(f)->pMethods->xFetch(real(f), off, n, pp);
}

static int wb_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    return real(f)->pMethods->xUnfetch(real(f), off, p);
}

static const sqlite3_io_methods methods = {
    3,
    wb_close,
    wb_read,
    wb_write,
    wb_truncate,
    wb_sync,
    wb_file_size,
    wb_lock,
    wb_unlock,
    wb_check_reserved,
    wb_file_control,
    wb_sector_size,
    wb_device,
    wb_shm_map,
    wb_shm_lock,
    wb_shm_barrier,
    wb_shm_unmap,
    wb_fetch,
    wb_unfetch,
};

static int wb_open(sqlite3_vfs *v, const char *name, sqlite3_file *f, int flags, int *out)
{
    sqlite3_vfs *orig = v->pAppData;
    /* A failed open must leave pMethods NULL. */
    struct wb_file *w = (struct wb_file *)f;
    memset(w, 0, sizeof(*w));
    w->real = (sqlite3_file *)((char *)w + WB_HDR);
    int rc = orig->xOpen(orig, name, w->real, flags, out);
    if (rc != SQLITE_OK) {
        if (w->real->pMethods)
            w->real->pMethods->xClose(w->real);
        f->pMethods = NULL;
        return rc;
    }
    /* Every method of ours calls the real file's: it must have them all (the unix VFS does). */
    if (w->real->pMethods->iVersion < 3) {
        w->real->pMethods->xClose(w->real);
        f->pMethods = NULL;
        return SQLITE_CANTOPEN;
    }
    w->wal = (flags & SQLITE_OPEN_WAL) != 0;
    f->pMethods = &methods;
    return SQLITE_OK;
}

static void do_register(void)
{
    sqlite3_vfs *orig = sqlite3_vfs_find(NULL);
    if (!orig)
        return;
    vfs = *orig; /* its other methods (paths, time, randomness) serve as they are */
    vfs.pNext = NULL;
    vfs.zName = WALBUF_VFS;
    vfs.szOsFile = (int)WB_HDR + orig->szOsFile;
    vfs.xOpen = wb_open;
    vfs.pAppData = orig;
    registered = sqlite3_vfs_register(&vfs, 0) == SQLITE_OK ? 0 : -1;
}

int walbuf_register(void)
{
    pthread_once(&once, do_register);
    return registered;
}

void walbuf_counts(uint64_t *a, uint64_t *wr)
{
    *a = atomic_load(&asked);
    *wr = atomic_load(&written);
}
