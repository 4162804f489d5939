/* The IVF index's single-query scan in one call: score every row of the probed lists against
 * the query and keep the k best, ties broken by id, in one pass over the rows.
 *
 * numpy does the same in a handful of calls per probed list (a view, a row-wise dot product,
 * a concatenation, a selection); at ~100 rows per list those calls cost as much as the
 * arithmetic. Here the dot products stream the contiguous rows with AVX2 + FMA where the CPU
 * has them (chosen at run time, so one build runs on any x86-64) and a running top-k of at
 * most k entries rejects most rows with one comparison.
 *
 * Only lists that are still contiguous arena rows (bounds lo >= 0) are scanned here; when a
 * probed list is not, the call returns -1 and the caller takes the numpy path. Built by
 * setuptools as `services.search._scan`; `services/search/index.py` falls back to numpy when
 * the module is missing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_X86_DISPATCH 1
#include <immintrin.h>
#endif

typedef float (*dot_fn)(const float *a, const float *b, Py_ssize_t n);

static float dot_plain(const float *a, const float *b, Py_ssize_t n)
{
    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

#ifdef HAVE_X86_DISPATCH
__attribute__((target("avx2,fma")))
static float dot_avx2(const float *a, const float *b, Py_ssize_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    Py_ssize_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float out = _mm_cvtss_f32(h);
    for (; i < n; i++)
        out += a[i] * b[i];
    return out;
}
#endif

static dot_fn dot = dot_plain;

/* A bounded heap of the best (score, id) pairs seen: the worst kept one at the root, so most
 * candidates are turned away by one comparison. (score, id) ranks before (score', id') when
 * the score is higher, or equal with a lower id: the kept set does not depend on the order
 * the candidates come in. */
typedef struct {
    float s;
    int64_t id;
} item;

static inline int better(item a, item b)
{
    return a.s > b.s || (a.s == b.s && a.id < b.id);
}

typedef struct {
    item *v;
    Py_ssize_t n, cap;
} heap;

static inline void heap_offer(heap *h, item x)
{
    item *v = h->v;
    Py_ssize_t j;
    if (h->n < h->cap) {  /* sift up */
        j = h->n++;
        while (j > 0 && better(v[(j - 1) / 2], x)) {
            v[j] = v[(j - 1) / 2];
            j = (j - 1) / 2;
        }
        v[j] = x;
        return;
    }
    if (h->cap == 0 || !better(x, v[0]))
        return;
    j = 0;  /* replace the root, sift down */
    for (;;) {
        Py_ssize_t c = 2 * j + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && better(v[c], v[c + 1]))
            c++;  /* the worse child */
        if (!better(x, v[c]))
            break;
        v[j] = v[c];
        j = c;
    }
    v[j] = x;
}

static int best_first(const void *a, const void *b)
{
    return better(*(const item *)a, *(const item *)b) ? -1
        : better(*(const item *)b, *(const item *)a) ? 1 : 0;
}

/* the kept items, best first */
static void heap_sort(heap *h)
{
    qsort(h->v, (size_t)h->n, sizeof(item), best_first);
}

static int get(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize,
               const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    if (view->itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s: items of %zd bytes expected, got %zd", what,
                     itemsize, view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Buffers for one call: fetched in order, all released at the end. */
typedef struct {
    Py_buffer v[10];
    int got;
} buffers;

static int fetch(buffers *b, PyObject *const *args, Py_ssize_t nargs, const char *spec,
                 const char *const *names)
{
    /* spec: one char per argument: 'f' float32, 'i' int64, 'F' / 'I' the same, writable */
    Py_ssize_t want = (Py_ssize_t)strlen(spec);
    b->got = 0;  /* release() reads it, also after a refusal here */
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%zd arguments expected, got %zd", want, nargs);
        return -1;
    }
    for (b->got = 0; b->got < want; b->got++) {
        char c = spec[b->got];
        int writable = c == 'F' || c == 'I';
        Py_ssize_t size = (c == 'f' || c == 'F') ? 4 : 8;
        if (get(args[b->got], &b->v[b->got], writable, size, names[b->got]) < 0)
            return -1;
    }
    return 0;
}

static void release(buffers *b)
{
    for (int i = 0; i < b->got; i++)
        PyBuffer_Release(&b->v[i]);
}

PyDoc_STRVAR(scan_doc,
"scan(arena, ids, bounds, probes, q, out_ids, out_scores) -> int\n\n"
"Score the rows arena[lo:hi] of each probed list (bounds[2*c], bounds[2*c+1]) against q\n"
"and write the best len(out_ids) (id, score) pairs, best first (ties: lower id first).\n"
"Returns how many were written, or -1 when a probed list is not contiguous (lo < 0).\n"
"arena: float32 rows of len(q); ids: int64 per arena row; bounds, probes: int64.");

static PyObject *scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    static const char *names[] = {"arena", "ids", "bounds", "probes", "q", "out_ids",
                                  "out_scores"};
    buffers b;
    long long found = -1;
    item *kept = NULL;
    (void)self;
    if (fetch(&b, args, nargs, "fiiifIF", names) < 0)
        goto done;
    const Py_ssize_t dim = b.v[4].len / 4, k = b.v[5].len / 8;
    const Py_ssize_t n_rows = dim ? b.v[0].len / 4 / dim : 0;
    const Py_ssize_t n_lists = b.v[2].len / 16, n_probes = b.v[3].len / 8;
    if (b.v[6].len / 4 != k || b.v[1].len / 8 != n_rows || dim == 0) {
        PyErr_SetString(PyExc_ValueError, "scan: mismatched buffer sizes");
        goto done;
    }
    const float *rows = b.v[0].buf, *query = b.v[4].buf;
    const int64_t *row_ids = b.v[1].buf, *bnd = b.v[2].buf, *probe = b.v[3].buf;
    for (Py_ssize_t p = 0; p < n_probes; p++) {  /* check first: no partial answers */
        int64_t c = probe[p];
        if (c < 0 || c >= n_lists) {
            PyErr_SetString(PyExc_IndexError, "scan: probe out of range");
            goto done;
        }
        int64_t lo = bnd[2 * c], hi = bnd[2 * c + 1];
        if (lo < 0)
            goto done;  /* found == -1: the caller gathers this list itself */
        if (hi < lo || hi > n_rows) {
            PyErr_SetString(PyExc_IndexError, "scan: list bounds out of range");
            goto done;
        }
    }
    kept = PyMem_RawMalloc((size_t)(k ? k : 1) * sizeof(item));
    if (kept == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    heap h = {kept, 0, k};
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t p = 0; p < n_probes; p++) {
        int64_t c = probe[p], hi = bnd[2 * c + 1];
        for (int64_t r = bnd[2 * c]; r < hi; r++) {
            item x = {dot(rows + r * dim, query, dim), row_ids[r]};
            heap_offer(&h, x);
        }
    }
    heap_sort(&h);
    Py_END_ALLOW_THREADS
    int64_t *out_ids = b.v[5].buf;
    float *out_scores = b.v[6].buf;
    for (Py_ssize_t j = 0; j < h.n; j++) {
        out_ids[j] = kept[j].id;
        out_scores[j] = kept[j].s;
    }
    found = h.n;
done:
    PyMem_RawFree(kept);
    release(&b);
    if (PyErr_Occurred())
        return NULL;
    return PyLong_FromLongLong(found);
}

PyDoc_STRVAR(probe_doc,
"probe(components, red_m2, bias, centroids, half_sq, q, shortlist, out_probes) -> int\n\n"
"The len(out_probes) lists nearest to q, nearest first, in two stages: PCA-space scores\n"
"red_m2 . (components . q) + bias (smaller is nearer) keep the `shortlist` best centroids,\n"
"full-space scores centroids . q - half_sq (larger is nearer) rank those. Returns how many\n"
"were written. components (p, d), red_m2 (K, p), centroids (K, d): float32 rows.");

static PyObject *probe(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    static const char *names[] = {"components", "red_m2", "bias", "centroids", "half_sq", "q",
                                  "out_probes"};
    buffers b;
    long long found = -1;
    item *kept = NULL;
    float *z = NULL;
    (void)self;
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "probe takes 8 arguments");
        return NULL;
    }
    Py_ssize_t shortlist = PyLong_AsSsize_t(args[6]);
    if (shortlist == -1 && PyErr_Occurred())
        return NULL;
    PyObject *bufargs[7] = {args[0], args[1], args[2], args[3], args[4], args[5], args[7]};
    if (fetch(&b, bufargs, 7, "ffffffI", names) < 0)
        goto done;
    const Py_ssize_t dim = b.v[5].len / 4, n_lists = b.v[2].len / 4;
    const Py_ssize_t pdim = dim ? b.v[0].len / 4 / dim : 0, nprobe = b.v[6].len / 8;
    if (dim == 0 || pdim == 0 || b.v[0].len != pdim * dim * 4
            || b.v[1].len != n_lists * pdim * 4 || b.v[3].len != n_lists * dim * 4
            || b.v[4].len != n_lists * 4) {
        PyErr_SetString(PyExc_ValueError, "probe: mismatched buffer sizes");
        goto done;
    }
    if (shortlist < nprobe)
        shortlist = nprobe;
    if (shortlist > n_lists)
        shortlist = n_lists;
    kept = PyMem_RawMalloc((size_t)(shortlist ? shortlist : 1) * sizeof(item));
    z = PyMem_RawMalloc((size_t)pdim * sizeof(float));
    if (kept == NULL || z == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const float *comp = b.v[0].buf, *red = b.v[1].buf, *bias = b.v[2].buf;
    const float *cent = b.v[3].buf, *half_sq = b.v[4].buf, *query = b.v[5].buf;
    heap h = {kept, 0, shortlist};
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < pdim; i++)
        z[i] = dot(comp + i * dim, query, dim);
    for (Py_ssize_t c = 0; c < n_lists; c++) {  /* stage 1: PCA space, smaller is nearer */
        item x = {-(dot(red + c * pdim, z, pdim) + bias[c]), c};
        heap_offer(&h, x);
    }
    Py_ssize_t m = h.n;
    h.n = 0;
    h.cap = nprobe < m ? nprobe : m;
    item *shortl = PyMem_RawMalloc((size_t)(m ? m : 1) * sizeof(item));
    if (shortl != NULL) {
        memcpy(shortl, kept, (size_t)m * sizeof(item));
        for (Py_ssize_t j = 0; j < m; j++) {  /* stage 2: full space, larger is nearer */
            int64_t c = shortl[j].id;
            item x = {dot(cent + c * dim, query, dim) - half_sq[c], c};
            heap_offer(&h, x);
        }
        heap_sort(&h);
        PyMem_RawFree(shortl);
        found = h.n;
    }
    Py_END_ALLOW_THREADS
    if (found < 0) {
        PyErr_NoMemory();
        goto done;
    }
    int64_t *out = b.v[6].buf;
    for (Py_ssize_t j = 0; j < h.n; j++)
        out[j] = kept[j].id;
done:
    PyMem_RawFree(kept);
    PyMem_RawFree(z);
    release(&b);
    if (PyErr_Occurred())
        return NULL;
    return PyLong_FromLongLong(found);
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL, scan_doc},
    {"probe", (PyCFunction)(void (*)(void))probe, METH_FASTCALL, probe_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_scan",
    .m_doc = "The IVF index's single-query probe and scan (see _scan.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__scan(void)
{
#ifdef HAVE_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        dot = dot_avx2;
#endif
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddStringConstant(m, "kernel", dot == dot_plain ? "plain"
                                                : "avx2") < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
