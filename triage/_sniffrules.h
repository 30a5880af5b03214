/* filetype.SNIFF_RULES read in C, for the extensions that type content as they read it
 * (triage/features/_mbhash.c, triage/_tskwalk.c). The table is the rule: each entry is
 * (mime, ((offset, bytes), ...)), and the first entry all of whose parts match the head of
 * the content names its type. Only read here, never restated.
 */
#ifndef TRIAGE_SNIFFRULES_H
#define TRIAGE_SNIFFRULES_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    Py_ssize_t off, len;
    const uint8_t *sig;
} SniffPart;

typedef struct {
    PyObject *mime;               /* borrowed from the table `held` keeps */
    Py_ssize_t first, nparts;
} SniffRule;

typedef struct {
    PyObject *held;               /* the rules, as given (a new reference) */
    SniffRule *rules;
    SniffPart *parts;
    Py_ssize_t nrules;
} SniffTable;

static void sniff_table_free(SniffTable *t) {
    PyMem_Free(t->rules);
    PyMem_Free(t->parts);
    Py_CLEAR(t->held);
    t->rules = NULL;
    t->parts = NULL;
    t->nrules = 0;
}

/* 0, or -1 with an exception set (TypeError for a malformed table, ValueError for a negative
 * offset). */
static int sniff_table_load(SniffTable *t, PyObject *rules) {
    memset(t, 0, sizeof *t);
    if (!PyTuple_Check(rules)) {
        PyErr_SetString(PyExc_TypeError, "rules must be a tuple");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(rules), nparts = 0;
    t->rules = PyMem_Calloc((size_t)(n ? n : 1), sizeof(SniffRule));
    if (!t->rules) { PyErr_NoMemory(); return -1; }
    for (Py_ssize_t r = 0; r < n; r++) {
        PyObject *rule = PyTuple_GET_ITEM(rules, r), *mime, *ps;
        if (!PyTuple_Check(rule) || PyTuple_GET_SIZE(rule) != 2 ||
            !PyUnicode_Check(mime = PyTuple_GET_ITEM(rule, 0)) ||
            !PyTuple_Check(ps = PyTuple_GET_ITEM(rule, 1))) {
            PyErr_SetString(PyExc_TypeError, "a rule is (mime, ((offset, signature), ...))");
            goto fail;
        }
        t->rules[r].mime = mime;
        t->rules[r].first = nparts;
        t->rules[r].nparts = PyTuple_GET_SIZE(ps);
        nparts += t->rules[r].nparts;
    }
    t->parts = PyMem_Calloc((size_t)(nparts ? nparts : 1), sizeof(SniffPart));
    if (!t->parts) { PyErr_NoMemory(); goto fail; }
    for (Py_ssize_t r = 0; r < n; r++) {
        PyObject *ps = PyTuple_GET_ITEM(PyTuple_GET_ITEM(rules, r), 1);
        for (Py_ssize_t k = 0; k < t->rules[r].nparts; k++) {
            PyObject *part = PyTuple_GET_ITEM(ps, k);
            SniffPart *p = &t->parts[t->rules[r].first + k];
            if (!PyTuple_Check(part) || PyTuple_GET_SIZE(part) != 2 ||
                !PyBytes_Check(PyTuple_GET_ITEM(part, 1))) {
                PyErr_SetString(PyExc_TypeError, "a rule's part is (offset, bytes)");
                goto fail;
            }
            p->off = PyLong_AsSsize_t(PyTuple_GET_ITEM(part, 0));
            if (p->off == -1 && PyErr_Occurred()) goto fail;
            if (p->off < 0) { PyErr_SetString(PyExc_ValueError, "a negative offset"); goto fail; }
            p->sig = (const uint8_t *)PyBytes_AS_STRING(PyTuple_GET_ITEM(part, 1));
            p->len = PyBytes_GET_SIZE(PyTuple_GET_ITEM(part, 1));
        }
    }
    t->nrules = n;
    t->held = Py_NewRef(rules);
    return 0;
fail:
    sniff_table_free(t);
    return -1;
}

/* The mime (borrowed) of the first rule that the `n` bytes at `head` match; NULL for none. */
static PyObject *sniff_table_match(const SniffTable *t, const uint8_t *head, Py_ssize_t n) {
    for (Py_ssize_t r = 0; r < t->nrules; r++) {
        const SniffPart *p = t->parts + t->rules[r].first;
        Py_ssize_t k = 0;
        for (; k < t->rules[r].nparts; k++)
            if (p[k].off > n || p[k].len > n - p[k].off || memcmp(head + p[k].off, p[k].sig, (size_t)p[k].len))
                break;
        if (k == t->rules[r].nparts) return t->rules[r].mime;
    }
    return NULL;
}

#endif
