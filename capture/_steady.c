/* capture/flows.py FlowTable.ingest's fast path for frames of flows it already holds, compiled:
 * Ethernet (at most one 802.1Q tag), IPv4 without options or IPv6 without extension headers,
 * unfragmented TCP/UDP, a flow in the table that reads no payload any more and whose TCP health
 * is in its steady `Half` pair (or off), no SYN, inside the open second and bucket. For those the
 * same updates as the Python loop, on the same objects: the flow's side list [bytes, frames,
 * last_seen, tcp_flags, ..., mark, bytes at mark], the touched list of the open second, and
 * tcp_health.see for TCP health.
 *
 * `count` walks the batch from `start` and stops at the first frame that is not of that kind,
 * without counting it: Python's loop takes that frame (a new flow, a first payload, a SYN, a new
 * second or bucket, any other shape) and calls again after it. So every frame is counted once,
 * in order, by one of the two, and the Python loop stays the reference the tests hold this to
 * (tests/test_steady.py: the same rollups, TCP health and points from both on real and random
 * traffic). Python's fallback, without a compiler or with NETTALLY_PURE_PYTHON=1, is that loop. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define TCP 6
#define UDP 17
#define SYN_ONLY 0x02

static inline unsigned be16(const unsigned char *p) { return (unsigned)p[0] << 8 | p[1]; }
static inline unsigned long be32(const unsigned char *p) {
    return (unsigned long)p[0] << 24 | (unsigned long)p[1] << 16 | (unsigned long)p[2] << 8 | p[3];
}

/* c[i] = c[i] + n (Python ints) */
static int add_to(PyObject *c, Py_ssize_t i, PyObject *n) {
    PyObject *sum = PyNumber_Add(PyList_GET_ITEM(c, i), n);
    if (sum == NULL)
        return -1;
    PyObject *old = PyList_GET_ITEM(c, i);
    PyList_SET_ITEM(c, i, sum);
    Py_DECREF(old);
    return 0;
}

static void set_item(PyObject *c, Py_ssize_t i, PyObject *value) {
    PyObject *old = PyList_GET_ITEM(c, i);
    Py_INCREF(value);
    PyList_SET_ITEM(c, i, value);
    Py_DECREF(old);
}

/* One frame: 1 counted (its wire length and direction added to the totals), 0 not for this
 * path (nothing touched: Python takes it), -1 an error (an exception is set). */
static int one(PyObject *frame, PyObject *dirs, PyObject *mark, PyObject *touched, double floor_, double edge,
               PyObject *see, long long totals[4]) {
    if (!PyTuple_CheckExact(frame) || PyTuple_GET_SIZE(frame) != 4)
        return 0;
    PyObject *ts_obj = PyTuple_GET_ITEM(frame, 0), *n_obj = PyTuple_GET_ITEM(frame, 1);
    PyObject *data_obj = PyTuple_GET_ITEM(frame, 2), *out_obj = PyTuple_GET_ITEM(frame, 3);
    if (!PyFloat_CheckExact(ts_obj) || !PyLong_CheckExact(n_obj) || !PyBytes_CheckExact(data_obj))
        return 0;
    int overflow = 0;
    long long n = PyLong_AsLongLongAndOverflow(n_obj, &overflow);
    int outbound = PyObject_IsTrue(out_obj);
    if (overflow || n < 0 || n > (1LL << 40) || outbound < 0) {
        PyErr_Clear();
        return 0;                                   /* nothing touched yet: Python takes the frame */
    }
    double ts = PyFloat_AS_DOUBLE(ts_obj);
    if (!(floor_ <= ts && ts < edge))
        return 0;                                   /* a new second or bucket: Python rolls it */
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(data_obj);
    Py_ssize_t size = PyBytes_GET_SIZE(data_obj);
    Py_ssize_t off = 0;
    if (size >= 18 && d[12] == 0x81 && d[13] == 0) {
        off = 4;
        size -= 4;
    }
    const unsigned char *p = d + off;
    int proto, v6;
    long ip_payload;                             /* bytes after the IP header, as the header says */
    if (size >= 50 && p[12] == 8 && p[13] == 0) {
        unsigned total_len = be16(p + 16), frag = be16(p + 20);
        proto = p[23];
        if (p[14] != 0x45 || (frag & 0x3FFF) || !((proto == TCP && total_len >= 34) || (proto == UDP && total_len >= 24)))
            return 0;
        v6 = 0;
        ip_payload = (long)total_len - 20;
    } else if (size >= 70 && p[12] == 0x86 && p[13] == 0xDD) {
        unsigned plen = be16(p + 18);
        proto = p[20];
        if ((p[14] >> 4) != 6 || !((proto == TCP && plen >= 14) || (proto == UDP && plen >= 4)))
            return 0;
        v6 = 1;
        ip_payload = (long)plen;
    } else {
        return 0;
    }
    const unsigned char *t = p + (v6 ? 54 : 34);  /* the TCP or UDP header */
    unsigned sport = be16(t), dport = be16(t + 2), flags = 0, win = 0;
    unsigned long seq = 0, ack = 0;
    long seglen = 0;
    if (proto == TCP) {
        seq = be32(t + 4);
        ack = be32(t + 8);
        flags = t[13];
        win = be16(t + 14);
        seglen = ip_payload - (t[12] >> 4) * 4;
    }
    if (proto == TCP && (flags & 0x12) == SYN_ONLY)
        return 0;                                   /* Python notes the SYN (_syn_seen) */
    PyObject *key = Py_BuildValue("(iy#Iy#I)", proto, (const char *)(v6 ? p + 22 : p + 26), (Py_ssize_t)(v6 ? 16 : 4),
                                  sport, (const char *)(v6 ? p + 38 : p + 30), (Py_ssize_t)(v6 ? 16 : 4), dport);
    if (key == NULL)
        return -1;
    PyObject *c = PyDict_GetItemWithError(dirs, key);     /* borrowed */
    if (c == NULL || !PyList_CheckExact(c) || PyList_GET_SIZE(c) < 9 || PyList_GET_ITEM(c, 5) != Py_None) {
        Py_DECREF(key);
        if (PyErr_Occurred())
            return -1;
        return 0;                                   /* a new flow, or one still reading payloads */
    }
    PyObject *health = PyList_GET_ITEM(c, 6);
    if (proto == TCP && health != Py_None && !PyTuple_CheckExact(health)) {
        Py_DECREF(key);
        return 0;                                   /* health made at the second segment: Python */
    }
    Py_INCREF(c);
    if (PyList_GET_ITEM(c, 7) != mark) {          /* the first frame of this side in the open second */
        set_item(c, 7, mark);
        set_item(c, 8, PyList_GET_ITEM(c, 0));
        PyObject *pair = PyTuple_Pack(2, key, c);
        if (pair == NULL || PyList_Append(touched, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(key);
            Py_DECREF(c);
            return -1;
        }
        Py_DECREF(pair);
    }
    Py_DECREF(key);
    if (add_to(c, 0, n_obj) < 0) {
        Py_DECREF(c);
        return -1;
    }
    PyObject *one = PyLong_FromLong(1);
    int failed = one == NULL || add_to(c, 1, one) < 0;
    Py_XDECREF(one);
    if (failed) {
        Py_DECREF(c);
        return -1;
    }
    set_item(c, 2, ts_obj);
    if (proto == TCP) {
        PyObject *f = PyLong_FromUnsignedLong(flags);
        PyObject *was = f ? PyNumber_Or(PyList_GET_ITEM(c, 3), f) : NULL;
        Py_XDECREF(f);
        if (was == NULL) {
            Py_DECREF(c);
            return -1;
        }
        set_item(c, 3, was);
        Py_DECREF(was);
        if (health != Py_None) {
            PyObject *call[7];
            call[0] = health;
            call[1] = ts_obj;
            call[2] = PyLong_FromUnsignedLong(flags);
            call[3] = PyLong_FromUnsignedLong(seq);
            call[4] = PyLong_FromUnsignedLong(ack);
            call[5] = PyLong_FromUnsignedLong(win);
            call[6] = PyLong_FromLong(seglen);
            PyObject *r = NULL;
            Py_INCREF(health);                       /* held: the call may run Python code */
            if (call[2] && call[3] && call[4] && call[5] && call[6])
                r = PyObject_Vectorcall(see, call, 7, NULL);
            Py_DECREF(health);
            for (int k = 2; k < 7; k++)
                Py_XDECREF(call[k]);
            if (r == NULL) {
                Py_DECREF(c);
                return -1;
            }
            Py_DECREF(r);
        }
    }
    Py_DECREF(c);
    totals[0] += 1;
    totals[1] += n;
    if (outbound) {
        totals[2] += 1;
        totals[3] += n;
    }
    return 1;
}

/* count(frames, start, dirs, mark, touched, floor, edge, see)
 *   -> (next, frames, bytes, out_frames, out_bytes) of the frames it counted */
static PyObject *count(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "count() takes 8 arguments");
        return NULL;
    }
    PyObject *frames = args[0], *dirs = args[2], *mark = args[3], *touched = args[4], *see = args[7];
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    double floor_ = PyFloat_AsDouble(args[5]), edge = PyFloat_AsDouble(args[6]);
    if (PyErr_Occurred())
        return NULL;
    if (!PyList_Check(frames) || !PyDict_Check(dirs) || !PyList_Check(touched)) {
        PyErr_SetString(PyExc_TypeError, "count() takes a list of frames, a dict of flows and a touched list");
        return NULL;
    }
    long long totals[4] = {0, 0, 0, 0};              /* frames, bytes, outbound frames, outbound bytes */
    for (; i < PyList_GET_SIZE(frames); i++) {       /* the size read again: `see` may run Python code */
        PyObject *frame = PyList_GET_ITEM(frames, i);
        Py_INCREF(frame);                            /* held while its items are in use */
        int counted = one(frame, dirs, mark, touched, floor_, edge, see, totals);
        Py_DECREF(frame);
        if (counted < 0)
            return NULL;
        if (counted == 0)
            break;
    }
    return Py_BuildValue("(nLLLL)", i, totals[0], totals[1], totals[2], totals[3]);
}

static PyMethodDef methods[] = {
    {"count", (PyCFunction)(void (*)(void))count, METH_FASTCALL,
     "count(frames, start, dirs, mark, touched, floor, edge, see): FlowTable.ingest's steady path, compiled"},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "capture._steady", "FlowTable.ingest's fast path for flows it already holds, compiled.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__steady(void) { return PyModule_Create(&module_def); }
