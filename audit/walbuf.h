/*
 * walbuf: a SQLite VFS ("mg-walbuf") over the default one that gathers a transaction's WAL writes
 * into one.
 *
 * SQLite writes each WAL frame as two pwrite calls (the 24-byte frame header, then the page): a
 * commit of six pages costs twelve system calls before its fdatasync. Through this VFS the WAL's
 * contiguous writes are kept in memory and written with one call when SQLite syncs, reads, sizes,
 * truncates or closes the WAL (or the buffer is full, or a write is not contiguous). Nothing is
 * made visible earlier than before: with synchronous=FULL SQLite syncs the WAL before it publishes
 * a commit in the WAL index, and the sync writes the buffer first. Only for databases opened with
 * synchronous=FULL (the gateway's; store_open refuses anything else): with NORMAL a commit is
 * published without a sync, while its frames would still be in this buffer. The frames of a
 * transaction that spilled and then rolled back are written with the next flush, where SQLite
 * itself would have written them at once: beyond the WAL's last commit, never read. That holds
 * with one connection writing the database, the gateway's.
 */
#ifndef AUDIT_WALBUF_H
#define AUDIT_WALBUF_H

#include <stdint.h>

#define WALBUF_VFS "mg-walbuf"

/** Register the VFS (once; later calls do nothing). 0, or -1 when SQLite refused it. */
int walbuf_register(void);

/** Since start: WAL writes SQLite asked for, and the writes that reached the file. */
void walbuf_counts(uint64_t *asked, uint64_t *written);

#endif
