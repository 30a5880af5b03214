/* A file system's folders listed through The Sleuth Kit's C API, for triage/filesystems.py.
 *
 * The pytsk3 walk costs about 12 us a name in Python (a wrapper object per field read); a
 * walk of a million small files spent two thirds of its planner's time there. This module
 * does the per-name work of that walk in C: a folder is read in steps of names, and for each
 * name it returns what filesystems._record needs (its metadata, its first bytes, its content's pieces
 * in the image, a deleted file's first block). The walk's order, loops, gaps and records stay
 * in Python, decided once for both ways. read_plain also gives a plain file whose first bytes
 * match no content type (filetype.SNIFF_RULES, read through _sniffrules.h) as the tuple of
 * fields the walk would make of it: most of a million small files' per-name Python.
 *
 * It opens the raw image itself (read-only, TSK's raw reader), so filesystems.py uses it only
 * for volumes whose files it already reads straight from a single raw file.
 * TSK is Debian's libtsk (libtsk-dev). The TSK calls run without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>
#include <tsk/libtsk.h>

#include "_sniffrules.h"

#define HEAD_MAX 64          /* the most first bytes a caller may ask for (filetype.HEAD_BYTES) */

typedef struct {
    long long start, len;
} Piece;

typedef struct {
    char *name;               /* UTF-8 bytes as TSK gives them (NUL-terminated) */
    unsigned long long addr;
    int name_alloc, name_dir;
    int has_meta, meta_dir, meta_alloc;
    long long size;
    long long times[4];       /* mtime, atime, ctime, crtime */
    unsigned int nanos[4];
    int head_len;             /* -1: no head read; -2: to read from the first piece */
    int head_want;
    char head[HEAD_MAX];
    Piece *pieces;            /* NULL: none (read through TSK) */
    int npieces;
    long long first;          /* a deleted file's first block; -1: none */
} Entry;

typedef struct {
    PyObject_HEAD
    TSK_IMG_INFO *img;
    TSK_FS_INFO *fs;
    long long offset, media;
    int fd;                   /* the raw image again, for the first bytes of a file in pieces */
    TSK_FS_DIR *dir;          /* the folder being read, and where */
    size_t next, size;
    int head_bytes;           /* filetype.HEAD_BYTES */
    int max_pieces;           /* filesystems.MAX_PIECES */
    int busy;
    SniffTable sniff;         /* read_plain's rules (filetype.SNIFF_RULES), once loaded */
} Walker;

/* TSK's error text, as pytsk3 words it when there is none */
static const char *tsk_reason(void) {
    const char *text = tsk_error_get();
    return text != NULL && text[0] ? text : "unknown libtsk error";
}

static void entries_free(Entry *e, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(e[i].name);
        free(e[i].pieces);
    }
    free(e);
}

/* filesystems.file_pieces: an allocated file's one plain non-resident default attribute, every
 * run allocated, in order and inside the image; else none. */
static void pieces_of(Walker *w, TSK_FS_FILE *f, Entry *e) {
    if (!(f->meta->flags & TSK_FS_META_FLAG_ALLOC) || e->size <= 0)
        return;
    int nattr = tsk_fs_file_attr_getsize(f);
    const TSK_FS_ATTR *attr = NULL;
    for (int i = 0; i < nattr; i++) {
        const TSK_FS_ATTR *a = tsk_fs_file_attr_get_idx(f, i);
        if (a == NULL)
            return;           /* pytsk3 raises here: the record gets no pieces either way */
        if (a->type == TSK_FS_ATTR_TYPE_DEFAULT) {
            if (attr != NULL)
                return;
            attr = a;
        }
    }
    tsk_error_reset();
    int notplain = TSK_FS_ATTR_COMP | TSK_FS_ATTR_ENC | TSK_FS_ATTR_SPARSE | TSK_FS_ATTR_RES;
    if (attr == NULL || (attr->flags & notplain) || !(attr->flags & TSK_FS_ATTR_NONRES) ||
            attr->size != e->size)
        return;
    long long block = w->fs->block_size, expected = 0, left = e->size;
    if (block <= 0)
        return;
    int cap = 0, n = 0;
    Piece *out = NULL;
    const TSK_FS_ATTR_RUN *run = attr->nrd.run;
    for (int steps = 0; run != NULL && left > 0; steps++) {
        long long length = (long long)run->len;
        if (steps >= w->max_pieces || run->flags || (long long)run->offset != expected ||
                length <= 0 || length > LLONG_MAX / block)
            goto none;
        long long bytes = length * block, take = bytes < left ? bytes : left;
        if ((long long)run->addr > (LLONG_MAX - w->offset) / block)
            goto none;
        long long start = w->offset + (long long)run->addr * block;
        if (start > w->media || take > w->media - start)
            goto none;
        if (n == cap) {
            cap = cap ? cap * 2 : 2;
            Piece *more = realloc(out, cap * sizeof(Piece));
            if (more == NULL)
                goto none;
            out = more;
        }
        out[n].start = start;
        out[n].len = take;
        n++;
        expected += length;
        left -= take;
        run = run->next;
        if (run == attr->nrd.run)
            run = NULL;
    }
    if (left == 0) {
        e->pieces = out;
        e->npieces = n;
        return;
    }
none:
    free(out);
}

/* filesystems._first_block: where a deleted file's content starts, its first data run's
 * block (the caller multiplies: a hostile address stays exact). */
static long long first_block(TSK_FS_FILE *f) {
    int nattr = tsk_fs_file_attr_getsize(f);
    long long found = -1;
    for (int i = 0; i < nattr; i++) {
        const TSK_FS_ATTR *a = tsk_fs_file_attr_get_idx(f, i);
        if (a == NULL)
            break;
        int t = a->type;
        if ((t != TSK_FS_ATTR_TYPE_DEFAULT && t != TSK_FS_ATTR_TYPE_NTFS_DATA) ||
                (t == TSK_FS_ATTR_TYPE_NTFS_DATA && a->name != NULL && a->name[0]) ||
                !(a->flags & TSK_FS_ATTR_NONRES))
            continue;
        const TSK_FS_ATTR_RUN *run = a->nrd.run;
        if (run == NULL)
            continue;
        if (run->len > 0 && !(run->flags & TSK_FS_ATTR_RUN_FLAG_SPARSE) &&
                run->addr <= (TSK_DADDR_T)LLONG_MAX)
            found = (long long)run->addr;
        break;
    }
    tsk_error_reset();
    return found;
}

/* One name of a folder; 0 to skip it ("." and ".."). */
static int fill(Walker *w, TSK_FS_FILE *f, Entry *e) {
    const char *name = f->name->name ? f->name->name : "";
    if (!strcmp(name, ".") || !strcmp(name, ".."))
        return 0;
    memset(e, 0, sizeof(*e));
    e->head_len = -1;
    e->first = -1;
    e->name = strdup(name);
    e->addr = f->name->meta_addr;
    e->name_alloc = (f->name->flags & TSK_FS_NAME_FLAG_ALLOC) != 0;
    e->name_dir = TSK_FS_IS_DIR_NAME(f->name->type);
    TSK_FS_FILE *owner = f, *extra = NULL;
    /* filesystems._unclaimed_meta: a deleted name's entry that no file has claimed since */
    if (f->meta == NULL && e->addr && !e->name_alloc) {
        extra = tsk_fs_file_open_meta(w->fs, NULL, e->addr);
        if (extra != NULL && extra->meta != NULL &&
                !(extra->meta->flags & TSK_FS_META_FLAG_ALLOC))
            owner = extra;
        tsk_error_reset();
    }
    TSK_FS_META *m = owner->meta;
    if (m != NULL) {
        e->has_meta = 1;
        e->meta_dir = TSK_FS_IS_DIR_META(m->type);
        e->meta_alloc = (m->flags & TSK_FS_META_FLAG_ALLOC) != 0;
        e->size = m->size;
        e->times[0] = m->mtime;  e->nanos[0] = m->mtime_nano;
        e->times[1] = m->atime;  e->nanos[1] = m->atime_nano;
        e->times[2] = m->ctime;  e->nanos[2] = m->ctime_nano;
        e->times[3] = m->crtime; e->nanos[3] = m->crtime_nano;
        if (!e->meta_dir && e->size != 0) {
            pieces_of(w, owner, e);
            e->head_len = 0;
            if (e->size > 0) {
                size_t want = e->size < w->head_bytes ? (size_t)e->size : (size_t)w->head_bytes;
                /* A file in pieces: its first bytes are the first piece's (pieces_of holds
                 * them to what TSK reads), read by heads_in_order. */
                e->head_want = (int)want;
                if (e->pieces != NULL && (long long)want <= e->pieces[0].len) {
                    e->head_len = -2;
                } else {
                    ssize_t got = tsk_fs_file_read(owner, 0, e->head, want,
                                                   TSK_FS_FILE_READ_FLAG_NONE);
                    e->head_len = got > 0 ? (int)got : 0;
                    tsk_error_reset();
                }
            }
            if (!e->name_alloc)
                e->first = first_block(owner);
        }
    }
    if (extra != NULL)
        tsk_fs_file_close(extra);
    return e->name != NULL ? 1 : -1;
}

static int by_first_piece(const void *a, const void *b) {
    long long x = (*(Entry *const *)a)->pieces[0].start, y = (*(Entry *const *)b)->pieces[0].start;
    return (x > y) - (x < y);
}

/* The first bytes of a step's files in pieces, one small pread each, in the order they lie
 * in the image: TSK's read would fill a 64 KiB cache line a file (a walk of a million small
 * files spent 5 s copying those), and a folder's names come in hash order, so read from disk
 * in that order each read was a seek the kernel's read-ahead could not follow. A read that
 * fails or comes up short goes through TSK. */
static void heads_in_order(Walker *w, Entry *entries, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += entries[i].head_len == -2;
    Entry **order = k ? malloc(k * sizeof(Entry *)) : NULL;
    if (order != NULL) {
        k = 0;
        for (size_t i = 0; i < n; i++)
            if (entries[i].head_len == -2)
                order[k++] = &entries[i];
        qsort(order, k, sizeof(Entry *), by_first_piece);
    }
    for (size_t i = 0; i < (order != NULL ? k : n); i++) {
        Entry *e = order != NULL ? order[i] : &entries[i];
        if (e->head_len != -2)
            continue;
        ssize_t got = pread(w->fd, e->head, e->head_want, e->pieces[0].start);
        if (got != e->head_want) {
            TSK_FS_FILE *f = tsk_fs_file_open_meta(w->fs, NULL, e->addr);
            got = f != NULL ? tsk_fs_file_read(f, 0, e->head, e->head_want,
                                               TSK_FS_FILE_READ_FLAG_NONE) : -1;
            if (f != NULL)
                tsk_fs_file_close(f);
            tsk_error_reset();
        }
        e->head_len = got > 0 ? (int)got : 0;
    }
    free(order);
}

static PyObject *time_or_none(long long sec, unsigned int nano) {
    if (!sec)
        Py_RETURN_NONE;
    return PyFloat_FromDouble((double)sec + (double)nano / 1e9);
}

static PyObject *entry_tuple(Entry *e) {
    PyObject *name = PyUnicode_DecodeUTF8(e->name, strlen(e->name), "replace");
    PyObject *facts = NULL, *head = NULL, *pieces = NULL, *first = NULL;
    if (name == NULL)
        return NULL;
    if (e->has_meta) {
        facts = Py_BuildValue("(LOOOOO)", e->size, e->meta_alloc ? Py_True : Py_False,
                              Py_None, Py_None, Py_None, Py_None);
        if (facts == NULL)
            goto fail;
        for (int i = 0; i < 4; i++) {
            PyObject *t = time_or_none(e->times[i], e->nanos[i]);
            if (t == NULL)
                goto fail;
            PyTuple_SET_ITEM(facts, 2 + i, t);     /* replaces a borrowed None */
            Py_DECREF(Py_None);
        }
    } else {
        facts = Py_NewRef(Py_None);
    }
    head = e->head_len < 0 ? Py_NewRef(Py_None) :
        PyBytes_FromStringAndSize(e->head, e->head_len);
    if (head == NULL)
        goto fail;
    if (e->pieces != NULL) {
        pieces = PyTuple_New(e->npieces);
        if (pieces == NULL)
            goto fail;
        for (int i = 0; i < e->npieces; i++) {
            PyObject *p = Py_BuildValue("(LL)", e->pieces[i].start, e->pieces[i].len);
            if (p == NULL)
                goto fail;
            PyTuple_SET_ITEM(pieces, i, p);
        }
    } else {
        pieces = Py_NewRef(Py_None);
    }
    first = e->first < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(e->first);
    if (first == NULL)
        goto fail;
    int is_dir = e->has_meta ? e->meta_dir : e->name_dir;
    return Py_BuildValue("(NKOONNNNO)", name, e->addr, e->name_alloc ? Py_True : Py_False,
                         is_dir ? Py_True : Py_False, facts, head, pieces, first, Py_None);
fail:
    Py_DECREF(name);
    Py_XDECREF(facts);
    Py_XDECREF(head);
    Py_XDECREF(pieces);
    Py_XDECREF(first);
    return NULL;
}

/* A plain file (filesystems._walk_fs's test: a file with metadata and pieces, no deleted
 * file's first block) whose head no content-type rule matches: its fields as
 * records.PLAIN_FIELDS, (addr, path, name, size, allocated, orphan, mtime, atime, ctime,
 * crtime, type, ext_mismatch, pieces), the type "" (and so no extension mismatch:
 * filetype.ext_mismatch judges no unknown type). NULL with no exception set for any other
 * entry (entry_tuple's, typed by the caller as before). */
static PyObject *plain_tuple(Walker *w, Entry *e, PyObject *prefix, PyObject *orphans,
                             PyObject *empty) {
    if (!e->has_meta || e->meta_dir || e->pieces == NULL || e->first >= 0 || e->head_len < 0 ||
            sniff_table_match(&w->sniff, (const uint8_t *)e->head, e->head_len) != NULL)
        return NULL;
    PyObject *name = PyUnicode_DecodeUTF8(e->name, strlen(e->name), "replace");
    PyObject *path = name != NULL ? PyUnicode_Concat(prefix, name) : NULL;
    PyObject *t = path != NULL ? PyTuple_New(13) : NULL;
    if (t == NULL) {
        Py_XDECREF(name);
        Py_XDECREF(path);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 1, path);
    PyTuple_SET_ITEM(t, 2, name);
    PyTuple_SET_ITEM(t, 4, Py_NewRef(e->name_alloc ? Py_True : Py_False));
    PyTuple_SET_ITEM(t, 10, Py_NewRef(empty));
    PyTuple_SET_ITEM(t, 11, Py_NewRef(Py_False));
    Py_ssize_t orphan = PyUnicode_Tailmatch(path, orphans, 0, PY_SSIZE_T_MAX, -1);
    PyObject *pieces = orphan >= 0 ? PyTuple_New(e->npieces) : NULL;
    if (pieces == NULL)
        goto fail;
    PyTuple_SET_ITEM(t, 12, pieces);
    PyTuple_SET_ITEM(t, 5, Py_NewRef(orphan ? Py_True : Py_False));
    PyObject *v;
    if ((v = PyLong_FromUnsignedLongLong(e->addr)) == NULL)
        goto fail;
    PyTuple_SET_ITEM(t, 0, v);
    if ((v = PyLong_FromLongLong(e->size)) == NULL)
        goto fail;
    PyTuple_SET_ITEM(t, 3, v);
    for (int i = 0; i < 4; i++) {
        if ((v = time_or_none(e->times[i], e->nanos[i])) == NULL)
            goto fail;
        PyTuple_SET_ITEM(t, 6 + i, v);
    }
    for (int i = 0; i < e->npieces; i++) {
        if ((v = Py_BuildValue("(LL)", e->pieces[i].start, e->pieces[i].len)) == NULL)
            goto fail;
        PyTuple_SET_ITEM(pieces, i, v);
    }
    return t;
fail:
    Py_DECREF(t);         /* the slots still NULL are skipped */
    return NULL;
}

static void Walker_close_handles(Walker *self) {
    if (self->dir != NULL)
        tsk_fs_dir_close(self->dir);
    self->dir = NULL;
    if (self->fd >= 0)
        close(self->fd);
    self->fd = -1;
    if (self->fs != NULL)
        tsk_fs_close(self->fs);
    if (self->img != NULL)
        tsk_img_close(self->img);
    self->fs = NULL;
    self->img = NULL;
}

static int Walker_init(Walker *self, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"path", "offset", "ftype", "media_size", "head_bytes", "max_pieces",
                         NULL};
    PyObject *path;
    long long offset, media;
    unsigned int ftype;
    int head_bytes, max_pieces;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&LILii", kw, PyUnicode_FSConverter, &path,
                                     &offset, &ftype, &media, &head_bytes, &max_pieces))
        return -1;
    if (head_bytes < 0 || head_bytes > HEAD_MAX || offset < 0 || media < 0 || max_pieces < 1) {
        Py_DECREF(path);
        PyErr_SetString(PyExc_ValueError,
                        "head_bytes, offset, media_size or max_pieces out of range");
        return -1;
    }
    Walker_close_handles(self);       /* __init__ called again */
    const char *p = PyBytes_AS_STRING(path);
    TSK_IMG_INFO *img;
    TSK_FS_INFO *fs = NULL;
    int fd;
    char why[512] = "";
    Py_BEGIN_ALLOW_THREADS
    fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd >= 0)              /* as evidence._read_forward: twice the kernel's read-ahead */
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    img = fd < 0 ? NULL : tsk_img_open_utf8_sing(p, TSK_IMG_TYPE_RAW, 0);
    if (fd < 0) {
        snprintf(why, sizeof why, "cannot open the image");
    } else if (img != NULL) {
        fs = tsk_fs_open_img(img, offset, (TSK_FS_TYPE_ENUM)ftype);
        if (fs == NULL) {
            snprintf(why, sizeof why, "%s", tsk_reason());
            tsk_img_close(img);
            img = NULL;
        }
    } else {
        snprintf(why, sizeof why, "%s", tsk_reason());
    }
    tsk_error_reset();
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (fs == NULL) {
        if (fd >= 0)
            close(fd);
        PyErr_Format(PyExc_OSError, "tskwalk: (open) %s", why);
        return -1;
    }
    self->img = img;
    self->fs = fs;
    self->fd = fd;
    self->offset = offset;
    self->media = media;
    self->head_bytes = head_bytes;
    self->max_pieces = max_pieces;
    return 0;
}

static PyObject *Walker_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Walker *self = (Walker *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->fd = -1;        /* zero is a real descriptor: never close it by mistake */
    return (PyObject *)self;
}

static void Walker_dealloc(Walker *self) {
    Walker_close_handles(self);
    sniff_table_free(&self->sniff);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int claim(Walker *self) {
    if (self->fs == NULL || self->busy) {
        PyErr_SetString(PyExc_RuntimeError, self->fs == NULL ? "tskwalk: closed" :
                        "tskwalk: in use by another thread");
        return 0;
    }
    self->busy = 1;
    return 1;
}

/* opendir(inum) -> the number of names TSK holds for the folder (".." and "." among them).
 * OSError when it cannot be opened. The folder stays open for read() until its last name,
 * an error, the next opendir() or close(). */
static PyObject *Walker_opendir(Walker *self, PyObject *arg) {
    unsigned long long inum = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred() || !claim(self))
        return NULL;
    TSK_FS_DIR *dir;
    char why[512] = "";
    Py_BEGIN_ALLOW_THREADS
    if (self->dir != NULL)
        tsk_fs_dir_close(self->dir);
    dir = tsk_fs_dir_open_meta(self->fs, (TSK_INUM_T)inum);
    if (dir == NULL)
        snprintf(why, sizeof why, "%s", tsk_reason());
    tsk_error_reset();
    Py_END_ALLOW_THREADS
    self->busy = 0;
    self->dir = dir;
    self->next = 0;
    self->size = dir != NULL ? tsk_fs_dir_getsize(dir) : 0;
    if (dir == NULL) {
        PyErr_Format(PyExc_OSError, "Directory_Con: (tskwalk) Unable to open directory: %s",
                     why);
        return NULL;
    }
    return PyLong_FromSize_t(self->size);
}

/* read(n) -> (entries, error, done): the open folder's next names but "." and "..", at most
 * n of TSK's, as (name, addr, name_alloc, is_dir, facts, head, pieces, first, None); facts
 * is (size, meta_alloc, mtime, atime, ctime, crtime) or None. `error` is set when a name
 * could not be read (after the names before it); the folder is then done. In steps, so a
 * folder of a million names never sits in memory as a million tuples. */
static PyObject *read_names(Walker *self, Py_ssize_t want, PyObject *prefix,
                            PyObject *orphans) {
    if (want <= 0) {
        PyErr_SetString(PyExc_ValueError, "read() wants a positive count");
        return NULL;
    }
    if (!claim(self))
        return NULL;
    if (self->dir == NULL) {
        self->busy = 0;
        return Py_BuildValue("([]OO)", Py_None, Py_True);
    }
    size_t left = self->size - self->next;
    size_t take = (size_t)want < left ? (size_t)want : left;
    Entry *entries = calloc(take ? take : 1, sizeof(Entry));
    size_t n = 0;
    int nomem = entries == NULL, done = 0;
    char why[512] = "";
    Py_BEGIN_ALLOW_THREADS
    for (size_t i = 0; entries != NULL && i < take; i++) {
        TSK_FS_FILE *f = tsk_fs_dir_get(self->dir, self->next++);
        if (f == NULL) {
            snprintf(why, sizeof why, "Error opening File: %s", tsk_reason());
            break;
        }
        int kept = f->name != NULL ? fill(self, f, &entries[n]) : 0;
        tsk_fs_file_close(f);
        if (kept < 0) {
            nomem = 1;
            break;
        }
        n += kept;
    }
    tsk_error_reset();
    if (!nomem)
        heads_in_order(self, entries, n);
    if (why[0] || nomem || self->next >= self->size) {
        tsk_fs_dir_close(self->dir);
        self->dir = NULL;
        done = 1;
    }
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (nomem) {
        entries_free(entries, n);
        return PyErr_NoMemory();
    }
    PyObject *list = PyList_New(n);
    PyObject *empty = PyUnicode_FromStringAndSize("", 0);
    if (empty == NULL)
        Py_CLEAR(list);
    for (size_t i = 0; list != NULL && i < n; i++) {
        PyObject *t = prefix != NULL ? plain_tuple(self, &entries[i], prefix, orphans, empty)
                                     : NULL;
        if (t == NULL && !PyErr_Occurred())
            t = entry_tuple(&entries[i]);
        if (t == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, t);
    }
    Py_XDECREF(empty);
    entries_free(entries, n);
    if (list == NULL)
        return NULL;
    if (why[0])
        return Py_BuildValue("(NsO)", list, why, Py_True);
    return Py_BuildValue("(NOO)", list, Py_None, done ? Py_True : Py_False);
}

static PyObject *Walker_read(Walker *self, PyObject *arg) {
    Py_ssize_t want = PyLong_AsSsize_t(arg);
    if (PyErr_Occurred())
        return NULL;
    return read_names(self, want, NULL, NULL);
}

/* read_plain(n, prefix, orphans, rules) -> read()'s, but a plain file whose head matches none
 * of `rules` (filetype.SNIFF_RULES) comes as the tuple of its records.PLAIN_FIELDS (see
 * plain_tuple): its path is prefix + name (the folder's path and "/"), and it is an orphan
 * when that path starts with `orphans`. filesystems._walk_fs made those tuples in Python
 * (a fifth of a million small files' walk). */
static PyObject *Walker_read_plain(Walker *self, PyObject *args) {
    Py_ssize_t want;
    PyObject *prefix, *orphans, *rules;
    if (!PyArg_ParseTuple(args, "nUUO!", &want, &prefix, &orphans, &PyTuple_Type, &rules))
        return NULL;
    if (self->sniff.held != rules) {
        if (self->busy) {
            PyErr_SetString(PyExc_RuntimeError, "tskwalk: in use by another thread");
            return NULL;
        }
        sniff_table_free(&self->sniff);
        if (sniff_table_load(&self->sniff, rules) < 0)
            return NULL;
    }
    return read_names(self, want, prefix, orphans);
}

static PyObject *Walker_close(Walker *self, PyObject *unused) {
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "tskwalk: in use by another thread");
        return NULL;
    }
    Walker_close_handles(self);
    Py_RETURN_NONE;
}

static PyMethodDef Walker_methods[] = {
    {"opendir", (PyCFunction)Walker_opendir, METH_O, "Opens a folder (see the C source)."},
    {"read", (PyCFunction)Walker_read, METH_O, "The open folder's next names (see the C source)."},
    {"read_plain", (PyCFunction)Walker_read_plain, METH_VARARGS,
     "read(), with plain files as their fields (see the C source)."},
    {"close", (PyCFunction)Walker_close, METH_NOARGS, "Closes the file system and image."},
    {NULL}
};

static PyTypeObject WalkerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "triage._tskwalk.Walker",
    .tp_basicsize = sizeof(Walker),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Walker(path, offset, ftype, media_size, head_bytes, max_pieces): one file "
              "system of a "
              "raw image, opened read-only through libtsk.",
    .tp_new = Walker_new,
    .tp_init = (initproc)Walker_init,
    .tp_dealloc = (destructor)Walker_dealloc,
    .tp_methods = Walker_methods,
};

static PyObject *tsk_version(PyObject *m, PyObject *unused) {
    return PyUnicode_FromString(tsk_version_get_str());
}

static PyMethodDef module_methods[] = {
    {"tsk_version", tsk_version, METH_NOARGS, "The libtsk version this module runs on."},
    {NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "triage._tskwalk",
    "Folder listings through libtsk's C API (see triage/_tskwalk.c).", -1, module_methods
};

PyMODINIT_FUNC PyInit__tskwalk(void) {
    if (PyType_Ready(&WalkerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Walker", (PyObject *)&WalkerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
