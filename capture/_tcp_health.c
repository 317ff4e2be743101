/* capture/tcp_health.py's per-segment analysis (Half, see), compiled: the same steps, line for
 * line, on C numbers. Python keeps the rest (pair, take, rtts, fields) and stays the reference:
 * tests/test_tcp_health.py runs every test on both and checks, on random segment sequences, that
 * this leaves every field of both halves exactly as the Python `_see` does.
 *
 * Why: `see` runs on every TCP segment; in Python it cost about 1.1 us a frame of the import's
 * counting process (docs/PERFORMANCE.md, "TCP health on and off"), most of it the interpreter.
 *
 * Python's None becomes NaN (syn_ts, stream_rtt, rtt) or -1 (base) here; the attributes give
 * None back. Sequence arithmetic is on int64: `(a - b) & M` is then what Python computes. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>

#define M 0xFFFFFFFFLL
#define HALF_SEQ 0x80000000LL
#define OOO_DEFAULT 0.003
#define FAST_RETRANSMIT_WINDOW 0.02
#define KEEPALIVE 1
#define ZERO_WINDOW_PROBE 2
#define NONE_BASE (-1LL)

typedef struct {
    PyObject_HEAD
    double syn_ts, stream_rtt, rtt;          /* NaN: None */
    long long base;                          /* -1: None */
    char steady;
    long long nextseq, maxseq, lastack, window, dupacks, last, timed, samples;
    double nextseq_ts, lastack_ts, timed_ts, sample_sum, sample_min, sample_max;
    long long data_segments, retransmits, out_of_order, zero_windows, resets;
} Half;

static PyTypeObject HalfType;

static void restart(Half *h) {
    h->steady = 0;
    h->base = NONE_BASE;
    h->nextseq = 0;
    h->nextseq_ts = 0.0;
    h->maxseq = 0;
    h->lastack = 0;
    h->lastack_ts = 0.0;
    h->window = 0;
    h->dupacks = 0;
    h->last = 0;
    h->timed = -1;
    h->timed_ts = 0.0;
}

/* a new Half is as Python's __init__ leaves one, however it is made (Half.__new__ included) */
static PyObject *half_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (PyTuple_GET_SIZE(args) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "Half() takes no arguments");
        return NULL;
    }
    Half *self = (Half *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->syn_ts = self->stream_rtt = self->rtt = NAN;
    self->samples = self->data_segments = self->retransmits = self->out_of_order = 0;
    self->zero_windows = self->resets = 0;
    self->sample_sum = self->sample_min = self->sample_max = 0.0;
    restart(self);
    return (PyObject *)self;
}

static void sample(Half *p, double s) {
    p->timed = -1;
    if (s >= 0) {
        if (p->samples) {
            if (s < p->sample_min)
                p->sample_min = s;
            else if (s > p->sample_max)
                p->sample_max = s;
        } else {
            p->sample_min = p->sample_max = s;
        }
        p->samples += 1;
        p->sample_sum += s;
    }
}

/* the ACK part both ways share: data of the other side acknowledged */
static void acked(Half *p, double ts, long long ack) {
    long long maxseq = p->maxseq;
    if (maxseq && ((maxseq - ack) & M) >= HALF_SEQ) {       /* acknowledges data never seen */
        p->steady = 0;
        if (maxseq > p->nextseq)
            p->maxseq = p->nextseq;
        else
            p->dupacks = -1;
    }
    if (p->timed >= 0 && ((ack - p->timed) & M) < HALF_SEQ)
        sample(p, ts - p->timed_ts);
}

static void handshake_rtt(Half *h, Half *p, double ts) {
    if (isnan(h->stream_rtt) && !isnan(h->syn_ts)) {
        double dt = ts - h->syn_ts;
        if (dt > 0) {
            h->stream_rtt = p->stream_rtt = dt;
            if (isnan(h->rtt))
                h->rtt = p->rtt = dt;
        }
    }
}

/* tcp_health._see: every case */
static void see_all(Half *h, Half *p, double ts, long long flags, long long seq, long long ack, long long win,
                    long long seglen) {
    if (seglen < 0)
        return;
    if ((flags & 0x16) != 0x10) {
        if ((flags & 0x12) == 0x02) {
            if (h->base != NONE_BASE && seq != h->base) {
                restart(h);
                restart(p);
                h->stream_rtt = p->stream_rtt = NAN;
            }
            h->syn_ts = p->syn_ts = ts;
            h->steady = p->steady = 0;
        }
        if (flags & 4)
            h->resets += 1;
    }
    if ((flags & 0x12) == 0x10)
        handshake_rtt(h, p, ts);
    if (h->base == NONE_BASE)
        h->base = (flags & 2) ? seq : ((seq - 1) & M);
    if ((flags & 0x10) && p->base == NONE_BASE)
        p->base = (ack - 1) & M;

    long long nextseq = h->nextseq;
    int special = 0;
    if (seglen == 1 && seq == nextseq && p->window == 0) {
        special = ZERO_WINDOW_PROBE;
    } else {
        if (win == 0 && !(flags & 7))
            h->zero_windows += 1;
        if (seglen <= 1 && seq == ((nextseq - 1) & M) && !(flags & 7))
            special = KEEPALIVE;
        if (!seglen && win && win == h->window && seq == nextseq && ack == h->lastack && !(flags & 7)
            && !(p->last & KEEPALIVE))
            h->dupacks = h->dupacks == -1 ? 1 : h->dupacks + 1;
    }
    if (ack != h->lastack)
        h->dupacks = 0;
    if (flags & 0x10)
        acked(p, ts, ack);

    long long syn_fin = flags & 3;
    if (seglen || syn_fin) {
        if (seglen)
            h->data_segments += 1;
        if (special != KEEPALIVE) {
            int behind = nextseq && ((seq - nextseq) & M) >= HALF_SEQ;
            if (seglen > 1 && ((nextseq - 1) & M) == seq)
                behind = 0;
            long long plast = p->lastack;
            long long end = (seq + seglen) & M;
            if (seglen && plast && (end == plast || ((end - plast) & M) >= HALF_SEQ)) {
                h->retransmits += 1;                    /* spurious: already acknowledged */
                h->timed = -1;
            } else if (behind) {
                double window = (isnan(h->stream_rtt) || h->stream_rtt == 0.0) ? OOO_DEFAULT : h->stream_rtt;
                if (p->dupacks >= 2 && plast == seq && 0 <= ts - p->lastack_ts
                    && ts - p->lastack_ts < FAST_RETRANSMIT_WINDOW)
                    h->retransmits += 1;                /* fast retransmission */
                else if (0 <= ts - h->nextseq_ts && ts - h->nextseq_ts < window
                         && nextseq != ((end + (syn_fin ? 1 : 0)) & M))
                    h->out_of_order += 1;
                else
                    h->retransmits += 1;
                h->timed = -1;
            }
        }
    }
    long long nseq = syn_fin ? ((seq + seglen + 1) & M) : ((seq + seglen) & M);
    if ((!nextseq || ((nextseq - nseq) & M) >= HALF_SEQ) && special != ZERO_WINDOW_PROBE) {
        h->nextseq = nseq;
        h->nextseq_ts = ts;
        if ((seglen || syn_fin) && h->timed < 0) {
            h->timed = nseq;
            h->timed_ts = ts;
        }
    }
    if ((!h->maxseq || seq == h->maxseq) && special != ZERO_WINDOW_PROBE)
        h->maxseq = h->nextseq;
    h->window = win;
    h->lastack = ack;
    h->lastack_ts = ts;
    h->last = special;
    h->steady = p->base != NONE_BASE && (!isnan(h->stream_rtt) || isnan(h->syn_ts)) && !special
        && !h->dupacks && h->nextseq != 0 && h->maxseq != 0;
}

/* tcp_health._first: a fresh side's bare SYN or data segment; 0 (nothing changed) otherwise */
static int first(Half *h, Half *p, double ts, long long flags, long long seq, long long ack, long long win,
                 long long seglen) {
    if ((flags & 0x17) == 0x02 && !seglen) {
        long long nseq = (seq + 1) & M;
        h->syn_ts = p->syn_ts = ts;
        p->steady = 0;
        h->steady = p->base != NONE_BASE && !isnan(h->stream_rtt) && nseq != 0;
        h->base = seq;
        h->nextseq = h->timed = h->maxseq = nseq;
        h->nextseq_ts = h->timed_ts = ts;
    } else if ((flags & 0x17) == 0x10 && seglen > 1 && win) {
        long long plast = p->lastack;
        long long end = (seq + seglen) & M;
        if (!end || (plast && (end == plast || ((end - plast) & M) >= HALF_SEQ)))
            return 0;
        handshake_rtt(h, p, ts);
        h->base = (seq - 1) & M;
        if (p->base == NONE_BASE)
            p->base = (ack - 1) & M;
        acked(p, ts, ack);
        h->data_segments += 1;
        h->nextseq = h->timed = h->maxseq = end;
        h->nextseq_ts = h->timed_ts = ts;
        h->steady = !isnan(h->stream_rtt) || isnan(h->syn_ts);
    } else {
        return 0;
    }
    h->window = win;
    h->lastack = ack;
    h->lastack_ts = ts;
    return 1;
}

/* tcp_health.see: the short ways, else every step */
static void see_one(Half *h, Half *p, double ts, long long flags, long long seq, long long ack, long long win,
                    long long seglen) {
    if ((flags & 0x17) != 0x10 || !win || seq != h->nextseq || !h->steady) {
        if (h->base != NONE_BASE || !first(h, p, ts, flags, seq, ack, win, seglen))
            see_all(h, p, ts, flags, seq, ack, win, seglen);
        return;
    }
    if (seglen > 1) {
        long long plast = p->lastack;
        long long end = (seq + seglen) & M;
        if (!end || (plast && (end == plast || ((end - plast) & M) >= HALF_SEQ))) {
            see_all(h, p, ts, flags, seq, ack, win, seglen);
            return;
        }
        h->data_segments += 1;
        h->nextseq = end;
        h->nextseq_ts = ts;
        if (h->timed < 0) {
            h->timed = end;
            h->timed_ts = ts;
        }
        if (seq == h->maxseq)
            h->maxseq = end;
    } else if (seglen || (ack == h->lastack && win == h->window)) {
        see_all(h, p, ts, flags, seq, ack, win, seglen);
        return;
    }
    acked(p, ts, ack);
    h->window = win;
    h->lastack = ack;
    h->lastack_ts = ts;
}

typedef void (*step_fn)(Half *, Half *, double, long long, long long, long long, long long, long long);

/* one segment's numbers (ts, flags, seq, ack, win, seglen) from Python, through `step` */
static PyObject *run(step_fn step, Half *h, Half *p, PyObject *const *args) {
    double ts = PyFloat_AsDouble(args[0]);
    if (ts == -1.0 && PyErr_Occurred())
        return NULL;
    long long n[5];
    for (int i = 0; i < 5; i++) {
        n[i] = PyLong_AsLongLong(args[i + 1]);
        if (n[i] == -1 && PyErr_Occurred())
            return NULL;
    }
    step(h, p, ts, n[0], n[1], n[2], n[3], n[4]);
    Py_RETURN_NONE;
}

static PyObject *see(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *hp = nargs == 7 ? args[0] : NULL;
    if (hp == NULL || !PyTuple_CheckExact(hp) || PyTuple_GET_SIZE(hp) != 2
        || Py_TYPE(PyTuple_GET_ITEM(hp, 0)) != &HalfType || Py_TYPE(PyTuple_GET_ITEM(hp, 1)) != &HalfType) {
        PyErr_SetString(PyExc_TypeError, "see(hp, ts, flags, seq, ack, win, seglen), hp a pair of compiled Halves");
        return NULL;
    }
    return run(see_one, (Half *)PyTuple_GET_ITEM(hp, 0), (Half *)PyTuple_GET_ITEM(hp, 1), args + 1);
}

static PyObject *see_every_step(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8 || Py_TYPE(args[0]) != &HalfType || Py_TYPE(args[1]) != &HalfType) {
        PyErr_SetString(PyExc_TypeError, "_see(h, p, ts, flags, seq, ack, win, seglen) with compiled Halves");
        return NULL;
    }
    return run(see_all, (Half *)args[0], (Half *)args[1], args + 2);
}

/* the fields Python reads as None where unknown */
static PyObject *get_nan_none(Half *self, void *offset) {
    double v = *(double *)((char *)self + (Py_ssize_t)offset);
    if (isnan(v))
        Py_RETURN_NONE;
    return PyFloat_FromDouble(v);
}

static int set_nan_none(Half *self, PyObject *value, void *offset) {
    double v = NAN;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete");
        return -1;
    }
    if (value != Py_None) {
        v = PyFloat_AsDouble(value);
        if (v == -1.0 && PyErr_Occurred())
            return -1;
    }
    *(double *)((char *)self + (Py_ssize_t)offset) = v;
    return 0;
}

static PyObject *get_base(Half *self, void *closure) {
    if (self->base == NONE_BASE)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(self->base);
}

static int set_base(Half *self, PyObject *value, void *closure) {
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete");
        return -1;
    }
    long long v = NONE_BASE;
    if (value != Py_None) {
        v = PyLong_AsLongLong(value);
        if (v == -1 && PyErr_Occurred())
            return -1;
    }
    self->base = v;
    return 0;
}

static PyObject *get_steady(Half *self, void *closure) {
    return PyBool_FromLong(self->steady);
}

static int set_steady(Half *self, PyObject *value, void *closure) {
    int v = value ? PyObject_IsTrue(value) : -1;
    if (v < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_AttributeError, "cannot delete");
        return -1;
    }
    self->steady = (char)v;
    return 0;
}

#define NAN_NONE(name) {#name, (getter)get_nan_none, (setter)set_nan_none, NULL, (void *)offsetof(Half, name)}
static PyGetSetDef half_getset[] = {
    NAN_NONE(syn_ts), NAN_NONE(stream_rtt), NAN_NONE(rtt),
    {"base", (getter)get_base, (setter)set_base, NULL, NULL},
    {"steady", (getter)get_steady, (setter)set_steady, NULL, NULL},
    {NULL},
};

#define LL(name) {#name, T_LONGLONG, offsetof(Half, name), 0, NULL}
#define DBL(name) {#name, T_DOUBLE, offsetof(Half, name), 0, NULL}
static PyMemberDef half_members[] = {
    LL(nextseq), DBL(nextseq_ts), LL(maxseq), LL(lastack), DBL(lastack_ts), LL(window), LL(dupacks), LL(last),
    LL(timed), DBL(timed_ts), LL(samples), DBL(sample_sum), DBL(sample_min), DBL(sample_max),
    LL(data_segments), LL(retransmits), LL(out_of_order), LL(zero_windows), LL(resets),
    {NULL},
};

static PyTypeObject HalfType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "capture._tcp_health.Half",
    .tp_doc = "One sending side's sequence state and counters (capture/tcp_health.py Half).",
    .tp_basicsize = sizeof(Half),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = half_new,
    .tp_members = half_members,
    .tp_getset = half_getset,
};

static PyMethodDef methods[] = {
    {"see", (PyCFunction)(void (*)(void))see, METH_FASTCALL, "tcp_health.see, compiled"},
    {"_see", (PyCFunction)(void (*)(void))see_every_step, METH_FASTCALL, "tcp_health._see, compiled"},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "capture._tcp_health", "capture/tcp_health.py's per-segment analysis, compiled.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__tcp_health(void) {
    if (PyType_Ready(&HalfType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    Py_INCREF(&HalfType);
    if (PyModule_AddObject(m, "Half", (PyObject *)&HalfType) < 0) {
        Py_DECREF(&HalfType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
