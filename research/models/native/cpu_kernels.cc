// Direct 2-D convolution kernels for XLA:CPU, with BatchNorm's channel sums, the non-overlapping
// max pool and an unfusable identity, called from JAX through the XLA FFI (research/models/native_cpu.py builds this file on
// first use and registers the handlers).
//
// Layouts: input NHWC, kernel HWIO [kh, kw, C, K], output NHWC; f32. Zero padding is given as
// pad_top / pad_left (negative: cropped); the output's shape gives the rest.
//
//   research_conv_forward      y  [N, OH, OW, K]   from x [N, H, W, C] and w [kh, kw, C, K]
//   research_conv_kernel_grad  dw [kh, kw, C, K]  from x [N, H, W, C] and dy [N, OH, OW, K]
//   research_conv_kernel_grad_lanes  the same for C = 1 from x and dy transposed, [N, K, OH, OW]
//                              (pixels in the vector lanes; see "Kernel gradient in pixel lanes")
//   research_conv_input_grad   dx [N, H, W, C]     from dy [N, OH, OW, K] and w [kh, kw, C, K] (scatter;
//                              kernel rows of kw * C floats, each rounded up to whole vectors, at
//                              most ResearchMaxScatterFloats() in all)
//   research_channel_sums      [2, C]: per-channel sum of a and of a * b, a, b [..., C] (BatchNorm)
//   research_max_pool          y  [N, OH, OW, C]   from x [N, OH * wh, OW * ww, C] (windows = strides)
//   research_max_pool_grad     wh * ww results [N, OH, OW, C]: the gradient's piece for each window
//                              tap, from x, y and dy [N, OH, OW, C] (see "Max pooling" below)
//   research_flip_kernel       wt [kh, kw, K, C]   from w [kh, kw, C, K]: taps mirrored, C and K swapped
//   research_store             y = x, any dtype and shape, y aliasing x (see "Store" below)
//
// The convolutions are register-blocked outer-product loops over vectors of kLanes floats (GCC vector
// extensions), with no im2col buffer. The vector width and the register blocks follow the
// instruction set the build targets (native_cpu.py's RESEARCH_NATIVE_ISA): 16 floats and 32
// registers with AVX-512, 8 floats and 16 registers with AVX/AVX2, 4 floats otherwise. (A 16-float
// vector built for AVX2 is two ymm registers: blocks sized for 32 zmm registers then need 50-60
// ymm registers, and the accumulators spill to the stack every step -- 4x slower than XLA.)
//   forward: P output pixels of one row x V vectors of output channels accumulate in registers,
//            one weight vector load and P broadcasts of input values per (tap, input channel);
//            with one input channel, kLanes output pixels a vector instead ("pixel lanes");
//   kernel gradient: CB input channels x V vectors of output channels accumulate in registers over
//            a block of output rows, one dy load and CB broadcasts of input values per pixel; with
//            one input channel and few output channels, kLanes output pixels a vector instead.
// A task (a block of output rows of one image) first copies the zero-padded input rows it reads
// to per-thread scratch. Tasks run on XLA's intra-op thread pool. The kernel gradient sums its
// tasks in a fixed number of groups, each in order, and adds the groups in order: results do not
// depend on the thread count.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <type_traits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX512F__)
constexpr int kLanes = 16, kRegisters = 32;
#elif defined(__AVX__)
constexpr int kLanes = 8, kRegisters = 16;
#elif defined(__aarch64__)
constexpr int kLanes = 4, kRegisters = 32;
#else
constexpr int kLanes = 4, kRegisters = 16;
#endif
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

// Accumulator registers of a register block: three quarters of the vector registers (the rest hold
// the block's V weight or dy vectors and the broadcast scalar). 32 registers: 24 (6 x 4 vectors);
// 16 registers: 12 (the 6 x 2 block of BLIS's Haswell kernel).
constexpr int kAccumulators = kRegisters * 3 / 4;
// Vectors of output channels per register block: up to 4 with 32 registers, 2 with 16.
constexpr int kMaxVectors = kRegisters >= 32 ? 4 : 2;

// A register block's loop is compiled as a function of its own (noinline), without predictive
// commoning. Inlined into its task loop, the block's accumulators were allocated together with the
// caller's values: the AVX2 build (16 registers) kept 6 of the kernel gradient's 12 accumulators on
// the stack, a reload and a store per FMA, and 64-channel kernel gradients ran 2.5x slower than
// with AVX-512 instead of 2x (ResNet-20's 8x8 layer, batch 128: 6.2 -> 4.0 ms on a 2-core Xeon;
// PyTorch on AVX2 3.9). Predictive commoning carried the broadcasts shared by neighbouring pixels
// of a stride-3 (RGB) forward block from one input channel to the next: ten more live registers,
// and the same spills.
#if defined(__clang__)
#define REGISTER_BLOCK __attribute__((noinline))
#else
#define REGISTER_BLOCK __attribute__((noinline, optimize("no-predictive-commoning")))
#endif

inline Vec Load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(Vec));
  return v;
}

// The mask selecting a vector's first `lanes` floats (0 < lanes < kLanes), for masked loads and stores.
#if defined(__AVX512F__)
inline __mmask16 LaneMask(int lanes) { return static_cast<__mmask16>((1u << lanes) - 1); }
#elif defined(__AVX2__)
inline __m256i LaneMask(int lanes) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#endif

// Stores the first `lanes` floats of v: a whole vector, else one masked store (a memcpy of a
// run-time length is a library call per pixel: LeNet's 6-channel first layer spent most of its
// forward pass there).
inline void Store(float* p, const Vec& v, int lanes) {
  if (lanes == kLanes) {
    std::memcpy(p, &v, sizeof(Vec));
    return;
  }
#if defined(__AVX512F__)
  _mm512_mask_storeu_ps(p, LaneMask(lanes), reinterpret_cast<__m512>(v));
#elif defined(__AVX2__)
  _mm256_maskstore_ps(p, LaneMask(lanes), reinterpret_cast<__m256>(v));
#else
  for (int i = 0; i < lanes; ++i) p[i] = v[i];
#endif
}

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// acc[p][v] += s[p * stride] * w[v * kLanes, (v + 1) * kLanes) for P scalars and V weight vectors: the
// register-blocked step of the forward and scatter kernels (inlined, so a constant stride becomes
// address offsets).
template <int P, int V>
__attribute__((always_inline)) inline void OuterProductStep(Vec (&acc)[P][V], const float* w, const float* s,
                                                            int64_t stride) {
  Vec wv[V];
#pragma GCC unroll 16
  for (int v = 0; v < V; ++v) wv[v] = Load(w + v * kLanes);
#pragma GCC unroll 32
  for (int p = 0; p < P; ++p) {
    const float x = s[p * stride];
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) acc[p][v] += x * wv[v];
  }
}

// f(std::integral_constant<int, v>) for a run-time v in [1, kMaxVectors]: one register-block
// shape per vector count, instantiated only for the counts the instruction set uses.
template <int V = kMaxVectors, typename F>
inline void WithVectors(int v, const F& f) {
  if constexpr (V > 1) {
    if (v < V) return WithVectors<V - 1>(v, f);
  }
  f(std::integral_constant<int, V>{});
}

// Splits `total` into the fewest blocks of at most `max_block`, as even as possible: the block size.
inline int64_t EvenBlock(int64_t total, int64_t max_block) { return CeilDiv(total, CeilDiv(total, max_block)); }

// ---------------------------------------------------------------------------------------------
// Parallel loop on XLA's intra-op thread pool.

struct ParallelState {
  std::atomic<int64_t> next{0};
  std::atomic<int> joined{1};  // the caller is worker 0
  std::mutex mu;
  std::condition_variable cv;
  int64_t done = 0;  // tasks finished; guarded by mu
};

// Runs body(worker, task) for every task in [0, num_tasks) on the calling thread and up to
// max_workers - 1 threads of the pool; worker < max_workers identifies the thread (for per-thread
// scratch). Tasks are claimed one at a time, so a helper that starts late finds nothing left to do
// and the caller never waits on a helper that has not claimed a task.
template <typename Body>
void ParallelFor(ffi::ThreadPool& pool, int64_t num_tasks, int max_workers, const Body& body) {
  if (num_tasks <= 0) return;
  auto state = std::make_shared<ParallelState>();
  auto work = [state, num_tasks, &body](int worker) {
    int64_t finished = 0;
    for (int64_t t; (t = state->next.fetch_add(1)) < num_tasks; ++finished) body(worker, t);
    if (finished > 0) {
      std::lock_guard<std::mutex> lock(state->mu);
      state->done += finished;
      if (state->done == num_tasks) state->cv.notify_all();
    }
  };
  const int64_t helpers = std::min<int64_t>({pool.num_threads() - 1, max_workers - 1, num_tasks - 1});
  for (int64_t h = 0; h < helpers; ++h) {
    pool.Schedule([state, work, max_workers] {
      const int worker = state->joined.fetch_add(1);
      if (worker < max_workers) work(worker);
    });
  }
  work(0);
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->done == num_tasks; });
}

// ---------------------------------------------------------------------------------------------
// Geometry shared by the kernels.

struct Geometry {
  int64_t n, h, w, c;     // input [n, h, w, c]
  int64_t kh, kw, k;      // kernel [kh, kw, c, k]
  int64_t oh, ow;         // output [n, oh, ow, k]
  int64_t sh, sw, dh, dw; // strides, kernel dilation
  int64_t top, left;      // padding before row 0 / column 0 (negative: cropped)
  int64_t ws;             // columns of the padded input the output reads: (ow - 1) * sw + (kw - 1) * dw + 1
};

ffi::Error MakeGeometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> kernel, ffi::Span<const int64_t> y,
                        int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t top, int64_t left, Geometry* g) {
  if (x.size() != 4 || kernel.size() != 4 || y.size() != 4) return ffi::Error::InvalidArgument("expected rank-4 arrays");
  if (sh < 1 || sw < 1 || dh < 1 || dw < 1) return ffi::Error::InvalidArgument("strides and dilations must be >= 1");
  if (kernel[2] != x[3] || y[0] != x[0] || y[3] != kernel[3])
    return ffi::Error::InvalidArgument("batch or channel sizes of input, kernel and output disagree");
  *g = Geometry{x[0], x[1], x[2], x[3], kernel[0], kernel[1], kernel[3], y[1], y[2], sh, sw, dh, dw, top, left,
                (y[2] - 1) * sw + (kernel[1] - 1) * dw + 1};
  if (g->oh < 1 || g->ow < 1) return ffi::Error::InvalidArgument("empty output");
  return ffi::Error::Success();
}

int MaxWorkers(ffi::ThreadPool& pool) { return static_cast<int>(std::max<int64_t>(1, pool.num_threads())); }

// Copies `rows` rows of image n's zero-padded input, from padded row `row0` on, into
// scratch [rows, g.ws, g.c]: scratch (r, col) = x (row0 + r - top, col - left), zero outside x.
void CopyPaddedRows(const Geometry& g, const float* x, int64_t n, int64_t row0, int64_t rows, float* scratch) {
  const int64_t col_begin = std::clamp<int64_t>(g.left, 0, g.ws);           // first scratch column inside x
  const int64_t col_end = std::clamp<int64_t>(g.left + g.w, col_begin, g.ws);  // one past the last
  for (int64_t r = 0; r < rows; ++r) {
    float* out = scratch + r * g.ws * g.c;
    const int64_t source = row0 + r - g.top;
    if (source < 0 || source >= g.h || col_begin == col_end) {
      std::fill(out, out + g.ws * g.c, 0.0f);
      continue;
    }
    std::fill(out, out + col_begin * g.c, 0.0f);
    std::memcpy(out + col_begin * g.c, x + ((n * g.h + source) * g.w + col_begin - g.left) * g.c,
                (col_end - col_begin) * g.c * sizeof(float));
    std::fill(out + col_end * g.c, out + g.ws * g.c, 0.0f);
  }
}

// Buffers the kernels load whole vectors from start on a cache line (64 bytes): operator new's
// 16-byte alignment (and glibc's mmap-backed large blocks, 16 bytes past a page) made a run's
// vector loads straddle two lines at random from process to process -- the same convolution took
// 3.0 or 5.8 ms (ResNet-20's 16x16, 32-channel layer, batch 128, AMD EPYC Zen 4).
constexpr int64_t kAlignFloats = 64 / sizeof(float);

struct AlignedDelete {
  void operator()(float* p) const { ::operator delete[](p, std::align_val_t(64)); }
};

// `size` floats, 64-byte aligned; zeroed when `zero`, else uninitialized.
class AlignedFloats {
 public:
  explicit AlignedFloats(int64_t size, bool zero = true) : data_(new (std::align_val_t(64)) float[size]) {
    if (zero) std::fill(data_.get(), data_.get() + size, 0.0f);
  }
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  float& operator[](int64_t i) { return data_[i]; }

 private:
  std::unique_ptr<float[], AlignedDelete> data_;
};

// Per-worker scratch buffers of one size, each 64-byte aligned, uninitialized (every user writes
// before it reads).
class Scratch {
 public:
  Scratch(int workers, int64_t size)
      : size_(CeilDiv(size, kAlignFloats) * kAlignFloats), data_(std::max<int64_t>(1, workers * size_), false) {}
  float* operator[](int worker) { return data_.data() + worker * size_; }

 private:
  int64_t size_;
  AlignedFloats data_;
};

// ---------------------------------------------------------------------------------------------
// Tasks. A task is a block of output rows of one image or, for images smaller than kTaskPixels
// output pixels, several whole images; it copies the zero-padded input rows it reads to
// per-thread scratch, one image after another: [images][span rows][g.ws][g.c].

// Output pixels per task: enough to share most copied input rows and to reuse weights (forward)
// and accumulators (kernel gradient) from cache.
constexpr int64_t kTaskPixels = 256;

struct Tasks {
  int64_t images;  // images per task
  int64_t rows;    // output rows per task (all of them when images > 1)
  int64_t blocks;  // row blocks per image
  int64_t count;   // tasks
  int64_t span;    // padded input rows a full row block reads
};

Tasks MakeTasks(const Geometry& g) {
  Tasks t;
  t.rows = std::min(g.oh, std::max<int64_t>(1, kTaskPixels / g.ow));
  t.blocks = CeilDiv(g.oh, t.rows);
  t.images = t.blocks == 1 ? std::min(g.n, std::max<int64_t>(1, kTaskPixels / (g.oh * g.ow))) : 1;
  t.count = CeilDiv(g.n, t.images) * t.blocks;
  t.span = (t.rows - 1) * g.sh + (g.kh - 1) * g.dh + 1;
  return t;
}

// One task's part of the output: images [n0, n0 + images), output rows [row0, row0 + rows).
struct TaskRange {
  int64_t n0, images, row0, rows;
};

TaskRange RangeOf(const Geometry& g, const Tasks& t, int64_t task) {
  const int64_t n0 = (task / t.blocks) * t.images, row0 = (task % t.blocks) * t.rows;
  return {n0, std::min(t.images, g.n - n0), row0, std::min(t.rows, g.oh - row0)};
}

// Copies the task's padded input rows to scratch; returns the floats per image in scratch.
int64_t CopyTaskRows(const Geometry& g, const Tasks& t, const TaskRange& r, const float* x, float* scratch) {
  const int64_t image_floats = t.span * g.ws * g.c;
  for (int64_t i = 0; i < r.images; ++i)
    CopyPaddedRows(g, x, r.n0 + i, r.row0 * g.sh, (r.rows - 1) * g.sh + (g.kh - 1) * g.dh + 1,
                   scratch + i * image_floats);
  return image_floats;
}

// ---------------------------------------------------------------------------------------------
// Forward: P output pixels of one row x V channel vectors per register block, reading padded rows
// [*, g.ws, g.c] and input channels [c0, c0 + channels). Pixel p's input values are STEP = sw * c
// floats after pixel p - 1's; the common steps are template arguments, so the P broadcasts of one
// (tap, channel) step address constant offsets from one pointer (STEP 0: read from g at run time).
// With `accumulate` the block adds to y (a later chunk of input channels).

// The first `lanes` floats at p, zeros after (masked as `Store`).
inline Vec LoadLanes(const float* p, int lanes) {
  if (lanes == kLanes) return Load(p);
#if defined(__AVX512F__)
  return reinterpret_cast<Vec>(_mm512_maskz_loadu_ps(LaneMask(lanes), p));
#elif defined(__AVX2__)
  return reinterpret_cast<Vec>(_mm256_maskload_ps(p, LaneMask(lanes)));
#else
  Vec v = {};
  std::memcpy(&v, p, lanes * sizeof(float));
  return v;
#endif
}

template <int P, int V, int STEP>
REGISTER_BLOCK void ForwardBlock(const Geometry& g, const float* x, const float* w, int64_t kp, int64_t channels,
                                bool accumulate, float* y, int last_lanes) {
  Vec acc[P][V];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v)
      acc[p][v] = accumulate ? LoadLanes(y + p * g.k + v * kLanes, v == V - 1 ? last_lanes : kLanes) : Vec{};
  const int64_t step = STEP ? STEP : g.sw * g.c;
  // With dw == 1 and all channels, a kernel row's (tap, channel) pairs are one run of kw * c floats
  // in both the input row and the weights: one loop instead of kw.
  const bool merged = g.dw == 1 && channels == g.c;
  const int64_t taps = merged ? 1 : g.kw, run = merged ? g.kw * g.c : channels;
  for (int64_t i = 0; i < g.kh; ++i) {
    for (int64_t j = 0; j < taps; ++j) {
      const float* xs = x + (i * g.dh * g.ws + j * g.dw) * g.c;
      const float* ws = w + (i * g.kw + j) * g.c * kp;
      for (int64_t c = 0; c < run; ++c, ws += kp) OuterProductStep<P, V>(acc, ws, xs + c, step);
    }
  }
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v) Store(y + p * g.k + v * kLanes, acc[p][v], v == V - 1 ? last_lanes : kLanes);
}

// Most pixels per block for V channel vectors: P * V accumulators (kAccumulators in all) plus V
// weights fit the registers.
constexpr int MaxPixels(int v) { return kAccumulators / v; }
// Weights per (output-channel group, input-channel chunk), in floats: about L2-resident, reused
// by every pixel of a task.
constexpr int64_t kWeightChunkFloats = 1 << 16;

template <int V, int STEP, int P = MaxPixels(V)>
void ForwardDispatch(int pixels, const Geometry& g, const float* x, const float* w, int64_t kp, int64_t channels,
                     bool accumulate, float* y, int last_lanes) {
  if constexpr (P > 1) {
    if (pixels < P) return ForwardDispatch<V, STEP, P - 1>(pixels, g, x, w, kp, channels, accumulate, y, last_lanes);
  }
  ForwardBlock<P, V, STEP>(g, x, w, kp, channels, accumulate, y, last_lanes);
}

// Vectors of output channels per group (register blocks of up to that many vectors) for output
// rows of `ow` pixels and `vectors` channel vectors: the group size whose blocks load the fewest
// values per (tap, input channel) and output row, counting a weight vector (read from L2: the
// weights of 3x3x64x64 are 147 kB) as 4 broadcast input values (L1). Wide rows take the most
// vectors; short rows fewer, for more pixels per block: ResNet-20's 8x8, 64-channel layers (batch
// 128) as 3 + 1 vectors of 8-pixel blocks instead of 4 vectors of 4-pixel blocks, 5.5 -> 3.0 ms.
int ForwardGroupVectors(int64_t ow, int64_t vectors) {
  int best = 1;
  int64_t best_cost = -1;
  for (int most = 1; most <= kMaxVectors; ++most) {
    int64_t cost = 0;
    for (int64_t v0 = 0; v0 < vectors; v0 += most) {
      const int v = static_cast<int>(std::min<int64_t>(most, vectors - v0));
      cost += 4 * v * CeilDiv(ow, EvenBlock(ow, MaxPixels(v))) + ow;
    }
    if (best_cost < 0 || cost <= best_cost) best = most, best_cost = cost;
  }
  return best;
}

// A task's output: for each output-channel group and input-channel chunk, every row of every image.
template <int STEP>
void ForwardTask(const Geometry& g, const TaskRange& r, const float* scratch, int64_t image_floats,
                 const float* wpack, int64_t kp, float* y) {
  const int64_t vectors = kp / kLanes, row_floats = g.ws * g.c;
  const int group = ForwardGroupVectors(g.ow, vectors);
  for (int64_t v0 = 0; v0 < vectors; v0 += group) {
    const int v = static_cast<int>(std::min<int64_t>(group, vectors - v0));
    const int64_t co0 = v0 * kLanes;
    const int last_lanes = static_cast<int>(std::min<int64_t>(kLanes, g.k - (co0 + (v - 1) * kLanes)));
    const int64_t block = EvenBlock(g.ow, MaxPixels(v));
    const int64_t chunk = EvenBlock(g.c, std::max<int64_t>(1, kWeightChunkFloats / (g.kh * g.kw * v * kLanes)));
    for (int64_t c0 = 0; c0 < g.c; c0 += chunk) {
      const int64_t channels = std::min(chunk, g.c - c0);
      for (int64_t i = 0; i < r.images; ++i) {
        for (int64_t row = 0; row < r.rows; ++row) {
          const float* rows = scratch + i * image_floats + row * g.sh * row_floats + c0;
          float* y_row = y + ((r.n0 + i) * g.oh + r.row0 + row) * g.ow * g.k + co0;
          const float* w = wpack + c0 * kp + co0;
          for (int64_t ow0 = 0; ow0 < g.ow; ow0 += block) {
            const int pixels = static_cast<int>(std::min(block, g.ow - ow0));
            const float* x = rows + ow0 * g.sw * g.c;
            float* out = y_row + ow0 * g.k;
            const bool acc = c0 > 0;
            WithVectors(v, [&](auto vectors) {
              ForwardDispatch<decltype(vectors)::value, STEP>(pixels, g, x, w, kp, channels, acc, out, last_lanes);
            });
          }
        }
      }
    }
  }
}

using ForwardTaskFn = void (*)(const Geometry&, const TaskRange&, const float*, int64_t, const float*, int64_t,
                               float*);

ForwardTaskFn ForwardTaskFor(const Geometry& g) {
  switch (g.sw * g.c) {
    case 1: return ForwardTask<1>;
    case 3: return ForwardTask<3>;
    case 16: return ForwardTask<16>;
    case 32: return ForwardTask<32>;
    case 64: return ForwardTask<64>;
    default: return ForwardTask<0>;
  }
}

// ---------------------------------------------------------------------------------------------
// Forward by pixel lanes: convolutions of one input channel (LeNet-5's first layer, 28x28x1 -> 6
// channels). Their output channels fill only K of a vector's lanes (6 of 16 with AVX-512: each FMA
// of a channel-lane block does 6 multiply-adds). This kernel puts kLanes consecutive output pixels
// of a row in a vector instead -- the padded input row loaded at each tap's column offset (column
// stride and dilation 1), the row's last vector masked -- and gives each output channel its own
// accumulators: K FMAs per kLanes pixels and tap, where channel lanes take CeilDiv(K, kLanes) per
// pixel. The output stays [pixel][K]: a block's values pass through a small transposing buffer.
// LeNet-5's first layer, batch 128: 0.64-0.73 -> 0.30-0.37 ms with AVX-512, 0.56 -> 0.50 ms with
// AVX2 (AMD EPYC Zen 4, 2 cores). (Its kernel gradient the same way, with dy transposed to pixel
// lanes, ran slower than the merged-row blocks: 0.54-0.57 against 0.46-0.52 ms.)

// Pixel vectors per block (the row's pixels are blocks of up to kPixelBlockVectors * kLanes) and
// output channels per block (KB x PV accumulators, at most kAccumulators).
constexpr int kPixelBlockVectors = 2, kMaxPixelLaneChannels = 8;

// Whether the forward pass of `g` takes pixel lanes: one input channel, column stride and dilation
// 1, and fewer FMAs than channel lanes (LeNet-5's first layer: 12 against 28 a row and tap with
// AVX-512, 24 against 28 with AVX2).
bool UsesPixelLanes(const Geometry& g) {
  if (g.c != 1 || g.sw != 1 || g.dw != 1) return false;
  return g.k * CeilDiv(g.ow, kLanes) < CeilDiv(g.k, kLanes) * g.ow;
}

// The block's output, out [KB][PV * kLanes] (channel-major), for the pixels whose padded input row
// 0 starts at x (kernel row i at x + i * dh * ws) and KB output channels whose weights start at w
// (tap stride kp floats); the last vector loads `last_lanes` input floats, zeros after.
template <int KB, int PV>
void PixelLaneForwardBlock(const Geometry& g, const float* x, const float* w, int64_t kp, int last_lanes,
                           float* out) {
  Vec acc[KB][PV] = {};
  for (int64_t i = 0; i < g.kh; ++i) {
    const float* row = x + i * g.dh * g.ws;
    const float* wr = w + i * g.kw * kp;
    for (int64_t j = 0; j < g.kw; ++j) {
      Vec xv[PV];
#pragma GCC unroll 8
      for (int v = 0; v < PV; ++v) xv[v] = LoadLanes(row + j + v * kLanes, v == PV - 1 ? last_lanes : kLanes);
#pragma GCC unroll 32
      for (int c = 0; c < KB; ++c) {
        const float s = wr[j * kp + c];
#pragma GCC unroll 8
        for (int v = 0; v < PV; ++v) acc[c][v] += s * xv[v];
      }
    }
  }
  for (int c = 0; c < KB; ++c)
    for (int v = 0; v < PV; ++v) std::memcpy(out + (c * PV + v) * kLanes, &acc[c][v], sizeof(Vec));
}

template <int PV, int KB = std::min(kMaxPixelLaneChannels, kAccumulators / PV)>
void PixelLaneForwardDispatch(int channels, const Geometry& g, const float* x, const float* w, int64_t kp,
                              int last_lanes, float* out) {
  if constexpr (KB > 1) {
    if (channels < KB) return PixelLaneForwardDispatch<PV, KB - 1>(channels, g, x, w, kp, last_lanes, out);
  }
  PixelLaneForwardBlock<KB, PV>(g, x, w, kp, last_lanes, out);
}

// A task's output rows, from its padded input rows in scratch (image_floats apart) and the packed
// weights [kh, kw, 1, kp] (ForwardTask's arguments).
void PixelLaneForwardTask(const Geometry& g, const TaskRange& r, const float* scratch, int64_t image_floats,
                          const float* w, int64_t kp, float* y) {
  const int64_t block = kPixelBlockVectors * kLanes;
  alignas(64) float out[kMaxPixelLaneChannels * kPixelBlockVectors * kLanes];
  for (int64_t i = 0; i < r.images; ++i) {
    for (int64_t row = 0; row < r.rows; ++row) {
      const float* x = scratch + i * image_floats + row * g.sh * g.ws;
      float* y_row = y + ((r.n0 + i) * g.oh + r.row0 + row) * g.ow * g.k;
      for (int64_t p0 = 0; p0 < g.ow; p0 += block) {
        const int64_t pixels = std::min(block, g.ow - p0);
        const int vectors = static_cast<int>(CeilDiv(pixels, kLanes));
        const int last_lanes = static_cast<int>(pixels - (vectors - 1) * kLanes);
        const int64_t most = std::min<int64_t>(kMaxPixelLaneChannels, kAccumulators / vectors);
        for (int64_t k0 = 0; k0 < g.k; k0 += most) {
          const int channels = static_cast<int>(std::min(most, g.k - k0));
          WithVectors<kPixelBlockVectors>(vectors, [&](auto v) {
            PixelLaneForwardDispatch<decltype(v)::value>(channels, g, x + p0, w + k0, kp, last_lanes, out);
          });
          const int64_t stride = vectors * kLanes;
          for (int64_t p = 0; p < pixels; ++p)
            for (int c = 0; c < channels; ++c) y_row[(p0 + p) * g.k + k0 + c] = out[c * stride + p];
        }
      }
    }
  }
}

ffi::Error ConvForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                       ffi::ResultBuffer<ffi::F32> y, int64_t stride_h, int64_t stride_w, int64_t dilation_h,
                       int64_t dilation_w, int64_t pad_top, int64_t pad_left) {
  Geometry g;
  if (ffi::Error error = MakeGeometry(x.dimensions(), w.dimensions(), y->dimensions(), stride_h, stride_w,
                                      dilation_h, dilation_w, pad_top, pad_left, &g);
      error.failure())
    return error;
  // Weights with output channels padded to whole vectors: [kh, kw, c, kp].
  const int64_t kp = CeilDiv(g.k, kLanes) * kLanes;
  AlignedFloats wpack(g.kh * g.kw * g.c * kp);
  for (int64_t r = 0; r < g.kh * g.kw * g.c; ++r)
    std::memcpy(wpack.data() + r * kp, w.typed_data() + r * g.k, g.k * sizeof(float));
  const Tasks tasks = MakeTasks(g);
  const int workers = static_cast<int>(std::min<int64_t>(MaxWorkers(pool), tasks.count));
  Scratch scratch(workers, tasks.images * tasks.span * g.ws * g.c);
  const ForwardTaskFn forward_task = UsesPixelLanes(g) ? PixelLaneForwardTask : ForwardTaskFor(g);
  const float* input = x.typed_data();
  float* out = y->typed_data();
  ParallelFor(pool, tasks.count, workers, [&](int worker, int64_t task) {
    const TaskRange range = RangeOf(g, tasks, task);
    const int64_t image_floats = CopyTaskRows(g, tasks, range, input, scratch[worker]);
    forward_task(g, range, scratch[worker], image_floats, wpack.data(), kp, out);
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// Kernel gradient: CB input channels x V channel vectors per register block, summed over the
// output rows of every image of a task (`segments` images: x and dy pointers for each).

template <int CB, int V>
REGISTER_BLOCK void KernelGradBlock(const Geometry& g, const float* const* x, const float* const* dy,
                                    int64_t segments, int64_t rows, float* dw) {
  Vec acc[CB][V];
  for (int c = 0; c < CB; ++c)
    for (int v = 0; v < V; ++v) acc[c][v] = Load(dw + c * g.k + v * kLanes);
  const int64_t pixel_step = g.sw * g.c;
  for (int64_t s = 0; s < segments; ++s) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* xs = x[s] + r * g.sh * g.ws * g.c;
      const float* ds = dy[s] + r * g.ow * g.k;
      for (int64_t o = 0; o < g.ow; ++o, xs += pixel_step, ds += g.k) {
        Vec d[V];
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) d[v] = Load(ds + v * kLanes);
#pragma GCC unroll 32
        for (int c = 0; c < CB; ++c) {
          const float xv = xs[c];
#pragma GCC unroll 8
          for (int v = 0; v < V; ++v) acc[c][v] += xv * d[v];
        }
      }
    }
  }
  for (int c = 0; c < CB; ++c)
    for (int v = 0; v < V; ++v) Store(dw + c * g.k + v * kLanes, acc[c][v], kLanes);
}

// Most input channels per block for V vectors: CB * V accumulators plus V dy vectors fit the registers.
constexpr int MaxChannels(int v) { return kAccumulators / v; }

template <int V, int CB = MaxChannels(V)>
void KernelGradDispatch(int channels, const Geometry& g, const float* const* x, const float* const* dy,
                        int64_t segments, int64_t rows, float* dw) {
  if constexpr (CB > 1) {
    if (channels < CB) return KernelGradDispatch<V, CB - 1>(channels, g, x, dy, segments, rows, dw);
  }
  KernelGradBlock<CB, V>(g, x, dy, segments, rows, dw);
}

// Kernel rows merged into one block: when a kernel row's (tap, channel) pairs are one short run
// (dw == 1, at most kMaxRowRun floats: LeNet's 5x5 first layer, 1 channel, has 5) and the output
// channels one vector, a block of one kernel row has too few accumulators to hide the FMA latency;
// this block takes R kernel rows (x_row_step floats apart in the padded input, dw_row_step in dw),
// as many as fit kAccumulators, and reads dy unpadded (dy_pixel floats a pixel, the first dy_lanes
// loaded). Each accumulator adds its pixels in the same order as the one-row blocks: the same bits.
// (Accumulators in one flat array: as acc[R][RUN], GCC kept them on the stack.) LeNet-5's
// first-layer kernel gradient (batch 128): 0.74-0.77 -> 0.55-0.56 ms on a 2-core Xeon (its training
// step 5.4-5.9 -> 5.0-5.3 ms).
constexpr int kMaxRowRun = 7, kMaxMergedRows = 7;

template <int R, int RUN>
REGISTER_BLOCK void KernelGradRowsBlock(const Geometry& g, const float* const* x, const float* const* dy,
                                        int64_t segments, int64_t rows, int64_t x_row_step, int64_t dw_row_step,
                                        int64_t dy_pixel, int dy_lanes, float* dw) {
  constexpr int kBlock = R * RUN;  // accumulator t: kernel row t / RUN, run position t % RUN
  Vec acc[kBlock];
#pragma GCC unroll 32
  for (int t = 0; t < kBlock; ++t) acc[t] = Load(dw + t / RUN * dw_row_step + t % RUN * g.k);
  const int64_t pixel_step = g.sw * g.c;
  for (int64_t s = 0; s < segments; ++s) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* xs = x[s] + r * g.sh * g.ws * g.c;
      const float* ds = dy[s] + r * g.ow * dy_pixel;
      for (int64_t o = 0; o < g.ow; ++o, xs += pixel_step, ds += dy_pixel) {
        const Vec d = LoadLanes(ds, dy_lanes);
#pragma GCC unroll 32
        for (int t = 0; t < kBlock; ++t) acc[t] += xs[t / RUN * x_row_step + t % RUN] * d;
      }
    }
  }
#pragma GCC unroll 32
  for (int t = 0; t < kBlock; ++t) Store(dw + t / RUN * dw_row_step + t % RUN * g.k, acc[t], kLanes);
}

// KernelGradRowsBlock<R, RUN> for run-time kernel rows (<= kMaxMergedRows, R * RUN <= kAccumulators)
// and run (<= kMaxRowRun).
template <int RUN, int R = kMaxMergedRows>
void RowsBlockDispatch(int kernel_rows, const Geometry& g, const float* const* x, const float* const* dy,
                       int64_t segments, int64_t rows, int64_t x_row_step, int64_t dw_row_step, int64_t dy_pixel,
                       int dy_lanes, float* dw) {
  if constexpr (R > 1 && R * RUN > kAccumulators) {  // a block this large is never asked for
    return RowsBlockDispatch<RUN, R - 1>(kernel_rows, g, x, dy, segments, rows, x_row_step, dw_row_step, dy_pixel,
                                         dy_lanes, dw);
  } else {
    if constexpr (R > 1) {
      if (kernel_rows < R)
        return RowsBlockDispatch<RUN, R - 1>(kernel_rows, g, x, dy, segments, rows, x_row_step, dw_row_step,
                                             dy_pixel, dy_lanes, dw);
    }
    KernelGradRowsBlock<R, RUN>(g, x, dy, segments, rows, x_row_step, dw_row_step, dy_pixel, dy_lanes, dw);
  }
}

template <int RUN = kMaxRowRun>
void RowsDispatch(int run, int kernel_rows, const Geometry& g, const float* const* x, const float* const* dy,
                  int64_t segments, int64_t rows, int64_t x_row_step, int64_t dw_row_step, int64_t dy_pixel,
                  int dy_lanes, float* dw) {
  if constexpr (RUN > 1) {
    if (run < RUN)
      return RowsDispatch<RUN - 1>(run, kernel_rows, g, x, dy, segments, rows, x_row_step, dw_row_step, dy_pixel,
                                   dy_lanes, dw);
  }
  RowsBlockDispatch<RUN>(kernel_rows, g, x, dy, segments, rows, x_row_step, dw_row_step, dy_pixel, dy_lanes, dw);
}

// Whether the kernel gradient of `g` (g.k already rounded up to whole vectors) takes the merged-row
// blocks: one vector of output channels and kernel rows of at most kMaxRowRun (tap, channel) pairs.
bool MergesKernelRows(const Geometry& g) { return g.dw == 1 && g.k == kLanes && g.kw * g.c <= kMaxRowRun; }

// Adds to dw [kh, kw, c, k] the kernel gradient of one task: its images' padded input rows are in
// `scratch` (image_floats apart), their output gradients start at dy_rows[i] (dy_pixel floats a
// pixel, padded to g.k except for the merged-row blocks, which load dy_lanes of them).
void KernelGradTask(const Geometry& g, const TaskRange& r, const float* scratch, int64_t image_floats,
                    const float* const* dy_rows, int64_t dy_pixel, int dy_lanes, float* dw) {
  const int64_t vectors = g.k / kLanes;
  // With dw == 1 a kernel row's (tap, channel) pairs are one run of kw * c floats in the input row
  // and one run of kw * c rows of dw: blocks of the run instead of each tap's channels (for few
  // channels, where a tap alone would leave the register block part empty).
  const bool merged = g.dw == 1 && g.c < kLanes;
  const int64_t taps = merged ? 1 : g.kw, run = merged ? g.kw * g.c : g.c;
  std::vector<const float*> x(r.images), d(r.images);
  if (MergesKernelRows(g)) {
    const int64_t x_row_step = g.dh * g.ws * g.c, dw_row_step = run * g.k;
    const int64_t per_block = std::min<int64_t>(kMaxMergedRows, std::max<int64_t>(1, kAccumulators / run));
    for (int64_t i = 0; i < g.kh; i += per_block) {
      const int kernel_rows = static_cast<int>(std::min(per_block, g.kh - i));
      for (int64_t s = 0; s < r.images; ++s) x[s] = scratch + s * image_floats + i * x_row_step;
      RowsDispatch(static_cast<int>(run), kernel_rows, g, x.data(), dy_rows, r.images, r.rows, x_row_step,
                   dw_row_step, dy_pixel, dy_lanes, dw + i * dw_row_step);
    }
    return;
  }
  for (int64_t i = 0; i < g.kh; ++i) {
    for (int64_t j = 0; j < taps; ++j) {
      float* dw_tap = dw + (i * g.kw + j) * g.c * g.k;
      for (int64_t v0 = 0; v0 < vectors; v0 += kMaxVectors) {
        const int v = static_cast<int>(std::min<int64_t>(kMaxVectors, vectors - v0));
        const int64_t block = EvenBlock(run, MaxChannels(v));
        for (int64_t c0 = 0; c0 < run; c0 += block) {
          const int channels = static_cast<int>(std::min(block, run - c0));
          for (int64_t s = 0; s < r.images; ++s) {
            x[s] = scratch + s * image_floats + (i * g.dh * g.ws + j * g.dw) * g.c + c0;
            d[s] = dy_rows[s] + v0 * kLanes;
          }
          float* out = dw_tap + c0 * g.k + v0 * kLanes;
          WithVectors(v, [&](auto vectors) {
            KernelGradDispatch<decltype(vectors)::value>(channels, g, x.data(), d.data(), r.images, r.rows, out);
          });
        }
      }
    }
  }
}

// Partial sums of the kernel gradient (the parallel units of its batch reduction): 16, fewer for
// large kernels -- about kPartialSumFloats floats of partial sums in all, at least 4 groups (each
// group's buffer stays in cache across its tasks; 256 -> 256 channels 3x3: 49 ms with 16, 32 with 4).
constexpr int64_t kKernelGradGroups = 16;
constexpr int64_t kMinKernelGradGroups = 4;
constexpr int64_t kPartialSumFloats = int64_t{1} << 21;

ffi::Error ConvKernelGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                          ffi::ResultBuffer<ffi::F32> dw, int64_t stride_h, int64_t stride_w, int64_t dilation_h,
                          int64_t dilation_w, int64_t pad_top, int64_t pad_left) {
  Geometry g;
  if (ffi::Error error = MakeGeometry(x.dimensions(), dw->dimensions(), dy.dimensions(), stride_h, stride_w,
                                      dilation_h, dilation_w, pad_top, pad_left, &g);
      error.failure())
    return error;
  // The blocks read whole vectors of dy's channels: with k not a multiple of kLanes, each task copies
  // its dy rows with channels zero-padded to kp (except for the merged-row blocks, which load k
  // lanes of dy as it is), and dw is computed with kp channels, then cut.
  const int64_t k = g.k, kp = CeilDiv(k, kLanes) * kLanes;
  g.k = kp;
  const bool pad_dy = kp != k && !MergesKernelRows(g);
  const int64_t dy_pixel = pad_dy ? kp : k;
  const int dy_lanes = static_cast<int>(std::min<int64_t>(k, kLanes));
  const int64_t size = g.kh * g.kw * g.c * kp;
  const Tasks tasks = MakeTasks(g);
  // Tasks are split into a fixed number of groups, each summed in order into its own buffer and
  // the buffers added in order: the result does not depend on the thread count or scheduling.
  const int64_t groups = std::min(
      tasks.count, std::clamp(kPartialSumFloats / size, kMinKernelGradGroups, kKernelGradGroups));
  const int workers = static_cast<int>(std::min<int64_t>(MaxWorkers(pool), groups));
  Scratch scratch(workers, tasks.images * tasks.span * g.ws * g.c);
  const int64_t dy_task_floats = tasks.images * tasks.rows * g.ow * kp;
  Scratch dy_scratch(pad_dy ? workers : 0, dy_task_floats);
  Scratch partial(static_cast<int>(groups), size);
  const float* input = x.typed_data();
  const float* grad = dy.typed_data();
  ParallelFor(pool, groups, workers, [&](int worker, int64_t group) {
    float* acc = partial[static_cast<int>(group)];
    std::fill(acc, acc + size, 0.0f);
    std::vector<const float*> dy_rows(tasks.images);
    for (int64_t task = group * tasks.count / groups; task < (group + 1) * tasks.count / groups; ++task) {
      const TaskRange range = RangeOf(g, tasks, task);
      const int64_t image_floats = CopyTaskRows(g, tasks, range, input, scratch[worker]);
      for (int64_t i = 0; i < range.images; ++i) {
        const float* rows = grad + ((range.n0 + i) * g.oh + range.row0) * g.ow * k;
        if (!pad_dy) {
          dy_rows[i] = rows;
          continue;
        }
        float* padded = dy_scratch[worker] + i * tasks.rows * g.ow * kp;
        for (int64_t pixel = 0; pixel < range.rows * g.ow; ++pixel) {
          std::memcpy(padded + pixel * kp, rows + pixel * k, k * sizeof(float));
          std::fill(padded + pixel * kp + k, padded + (pixel + 1) * kp, 0.0f);
        }
        dy_rows[i] = padded;
      }
      KernelGradTask(g, range, scratch[worker], image_floats, dy_rows.data(), dy_pixel, dy_lanes, acc);
    }
  });
  // dw [kh, kw, c, k] = the groups' sums, added in order, without the padding channels.
  float* total = partial[0];
  for (int64_t group = 1; group < groups; ++group) {
    const float* p = partial[static_cast<int>(group)];
    for (int64_t e = 0; e < size; ++e) total[e] += p[e];
  }
  float* out = dw->typed_data();
  if (kp == k) {
    std::memcpy(out, total, size * sizeof(float));
  } else {
    for (int64_t row = 0; row < g.kh * g.kw * g.c; ++row) std::memcpy(out + row * k, total + row * kp, k * sizeof(float));
  }
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// Kernel gradient in pixel lanes, for one input channel with unit width stride and dilation (the
// first layer of LeNet-5 and other gray-image networks). The blocks above hold output channels in
// a vector's lanes, so LeNet-5's 6 channels fill 6 of 16 (its first-layer kernel gradient, 15M
// multiply-adds at batch 128, took 0.58 ms on the AMD EPYC, a third of the second layer's rate).
// Here a vector holds kLanes output pixels of one row (a row's last vector masked), dy comes
// transposed, [N, K, OH, OW], and each accumulator is one (kernel tap, output channel) pair:
// per pixel vector and kernel row, J input vectors (the row's taps, one unaligned load each) times
// KB dy vectors. A group's accumulators are vectors of per-lane partial sums in its buffer
// [kh, kw, K, kLanes]; the lanes and the groups are added in order at the end, so the result does
// not depend on the thread count.
constexpr int kMaxLaneTaps = 7;
constexpr int64_t kLaneTaskPixels = 1024;  // output pixels per pixel-lane task, in whole images

// Makes the compiler hold v in a vector register: GCC otherwise folds a loaded vector into each FMA
// that uses it as a memory operand (KB unaligned loads of one input vector instead of one).
inline void KeepInRegister(Vec& v) {
#if defined(__x86_64__)
  asm("" : "+v"(v));
#elif defined(__aarch64__)
  asm("" : "+w"(v));
#endif
}

// acc [J][KB] (j-th tap, kb-th channel: acc + j * tap_step + kb * kLanes) += sum over the rows and
// pixel vectors of x[row * x_row_step + pixel + j] * d[kb * d_channel_step + row * ow + pixel].
template <int J, int KB>
REGISTER_BLOCK void KernelGradLanesBlock(const float* x, int64_t x_row_step, const float* d,
                                         int64_t d_channel_step, int64_t rows, int64_t ow, float* acc,
                                         int64_t tap_step) {
  Vec a[J][KB];
#pragma GCC unroll 8
  for (int j = 0; j < J; ++j)
#pragma GCC unroll 8
    for (int kb = 0; kb < KB; ++kb) a[j][kb] = Load(acc + j * tap_step + kb * kLanes);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * x_row_step;
    const float* dr = d + r * ow;
    for (int64_t p = 0; p < ow; p += kLanes) {
      const int lanes = static_cast<int>(std::min<int64_t>(kLanes, ow - p));
      Vec dv[KB];
#pragma GCC unroll 8
      for (int kb = 0; kb < KB; ++kb) dv[kb] = LoadLanes(dr + kb * d_channel_step + p, lanes);
#pragma GCC unroll 8
      for (int j = 0; j < J; ++j) {
        Vec xv = LoadLanes(xr + p + j, lanes);
        KeepInRegister(xv);
#pragma GCC unroll 8
        for (int kb = 0; kb < KB; ++kb) a[j][kb] += xv * dv[kb];
      }
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < J; ++j)
#pragma GCC unroll 8
    for (int kb = 0; kb < KB; ++kb) Store(acc + j * tap_step + kb * kLanes, a[j][kb], kLanes);
}

// Output channels per lanes block for kernel rows of `taps` taps: as many as fit kAccumulators
// (the block also holds KB dy vectors and one input vector).
constexpr int LaneChannels(int taps) { return std::max(1, std::min(8, kAccumulators / taps)); }

using KernelGradLanesFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, int64_t, float*, int64_t);

template <int J, int KB = LaneChannels(J)>
KernelGradLanesFn LanesBlockFor(int channels) {
  if constexpr (KB > 1) {
    if (channels < KB) return LanesBlockFor<J, KB - 1>(channels);
  }
  return KernelGradLanesBlock<J, KB>;
}

template <int J = kMaxLaneTaps>
KernelGradLanesFn LanesBlockFor(int taps, int channels) {
  if constexpr (J > 1) {
    if (taps < J) return LanesBlockFor<J - 1>(taps, channels);
  }
  return LanesBlockFor<J>(channels);
}

ffi::Error ConvKernelGradLanes(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dyt,
                               ffi::ResultBuffer<ffi::F32> dw, int64_t stride_h, int64_t stride_w,
                               int64_t dilation_h, int64_t dilation_w, int64_t pad_top, int64_t pad_left) {
  const auto dt = dyt.dimensions();  // [N, K, OH, OW]
  if (dt.size() != 4) return ffi::Error::InvalidArgument("expected dy transposed to [N, K, OH, OW]");
  const int64_t y_dims[4] = {dt[0], dt[2], dt[3], dt[1]};
  Geometry g;
  if (ffi::Error error = MakeGeometry(x.dimensions(), dw->dimensions(), ffi::Span<const int64_t>(y_dims, 4),
                                      stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left, &g);
      error.failure())
    return error;
  if (g.c != 1 || g.sw != 1 || g.dw != 1 || g.kw > kMaxLaneTaps)
    return ffi::Error::InvalidArgument("pixel-lane kernel gradient: one input channel, unit width stride and "
                                       "dilation, at most 7 taps a kernel row");
  const int64_t tap_step = g.k * kLanes, size = g.kh * g.kw * tap_step;
  // Tasks of whole images (several when small): each block pass loads and stores its accumulators
  // once, so a task of few rows (MakeTasks' last block of a 28-row image had one) pays for little.
  Tasks tasks;
  tasks.rows = g.oh;
  tasks.blocks = 1;
  tasks.images = std::min(g.n, std::max<int64_t>(1, kLaneTaskPixels / (g.oh * g.ow)));
  tasks.count = CeilDiv(g.n, tasks.images);
  tasks.span = (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1;
  const int64_t groups = std::min(tasks.count, kKernelGradGroups);
  const int workers = static_cast<int>(std::min<int64_t>(MaxWorkers(pool), groups));
  Scratch scratch(workers, tasks.images * tasks.span * g.ws);
  Scratch partial(static_cast<int>(groups), size);
  const int block_channels = static_cast<int>(EvenBlock(g.k, LaneChannels(static_cast<int>(g.kw))));
  const float* input = x.typed_data();
  const float* grad = dyt.typed_data();
  ParallelFor(pool, groups, workers, [&](int worker, int64_t group) {
    float* acc = partial[static_cast<int>(group)];
    std::fill(acc, acc + size, 0.0f);
    for (int64_t task = group * tasks.count / groups; task < (group + 1) * tasks.count / groups; ++task) {
      const TaskRange range = RangeOf(g, tasks, task);
      const int64_t image_floats = CopyTaskRows(g, tasks, range, input, scratch[worker]);
      for (int64_t i = 0; i < range.images; ++i) {
        const float* rows = scratch[worker] + i * image_floats;
        const float* d = grad + (range.n0 + i) * g.k * g.oh * g.ow + range.row0 * g.ow;
        for (int64_t kr = 0; kr < g.kh; ++kr) {
          for (int64_t k0 = 0; k0 < g.k; k0 += block_channels) {
            const int channels = static_cast<int>(std::min<int64_t>(block_channels, g.k - k0));
            LanesBlockFor(static_cast<int>(g.kw), channels)(
                rows + kr * g.dh * g.ws, g.sh * g.ws, d + k0 * g.oh * g.ow, g.oh * g.ow, range.rows, g.ow,
                acc + kr * g.kw * tap_step + k0 * kLanes, tap_step);
          }
        }
      }
    }
  });
  // dw [kh, kw, 1, K] = the groups' lane sums, groups and lanes added in order.
  float* out = dw->typed_data();
  for (int64_t e = 0; e < g.kh * g.kw * g.k; ++e) {
    float total = 0.0f;
    for (int64_t group = 0; group < groups; ++group) {
      const float* lanes = partial[static_cast<int>(group)] + e * kLanes;
      float sum = 0.0f;
      for (int lane = 0; lane < kLanes; ++lane) sum += lanes[lane];
      total += sum;
    }
    out[e] = total;
  }
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// Input gradient by scatter: for each output pixel, the contributions of its dy [K] to every
// (tap, input channel) -- a vector of kh * kw * C floats, dy @ w^T -- are added to the padded input
// gradient. With dw == 1 a kernel row's (tap, channel) pairs are one run of kw * C floats there.
// Any stride; suits few input channels (the forward-style kernel on dy fills only C of kLanes lanes).
// A task is a block of images; each image's padded gradient is summed in scratch, then copied out.

template <int R, int P>
void InputGradPixels(const float* dy, int64_t k, const float* wt, int64_t rv, float* contrib) {
  // contrib [P][R * kLanes] = sum over channels of dy[p][ch] * wt[ch] (wt rows of rv floats).
  Vec acc[P][R] = {};
  for (int64_t ch = 0; ch < k; ++ch) OuterProductStep<P, R>(acc, wt + ch * rv, dy + ch, k);
  for (int p = 0; p < P; ++p)
    for (int r = 0; r < R; ++r) Store(contrib + p * rv + r * kLanes, acc[p][r], kLanes);
}

// Adds `vectors` whole vectors of src to dst (unaligned).
inline void AddVectors(float* dst, const float* src, int64_t vectors) {
  for (int64_t v = 0; v < vectors; ++v) {
    const Vec sum = Load(dst + v * kLanes) + Load(src + v * kLanes);
    std::memcpy(dst + v * kLanes, &sum, sizeof(Vec));
  }
}

// The most floats of one pixel's contributions, for every build: 12 AVX-512 vectors, 24 AVX2 ones.
// They are computed in chunks of vectors that fit the accumulator registers: two pixels at a time,
// kAccumulators / 2 vectors per chunk (12 with AVX-512: one chunk; 6 with AVX2), and for a row's
// last pixel alone up to kMaxChunkVectors. A chunk sums over the output channels in the same order
// as a whole block would: the chunking changes no result. (AVX2 builds once took at most 12
// vectors, all in one block: ResNet-20's 16 -> 32 stride-2 layer, 144 floats, fell back to Eigen,
// 9.0 ms against 3.2 with the AVX-512 build's scatter; LeNet-5's second layer, 160, to the
// forward kernel on dy.)
constexpr int kMaxScatterFloats = 192;
constexpr int kMaxChunkVectors = 12;

using InputGradPixelsFn = void (*)(const float*, int64_t, const float*, int64_t, float*);

template <int R>
InputGradPixelsFn InputGradPixelsFor(int vectors, int pixels) {
  if constexpr (R > 1) {
    if (vectors < R) return InputGradPixelsFor<R - 1>(vectors, pixels);
  }
  return pixels == 2 ? InputGradPixels<R, 2> : InputGradPixels<R, 1>;
}

// One chunk of a pixel's contributions: its first float and the block that computes it.
struct ContribChunk {
  int64_t offset;
  InputGradPixelsFn fn;
};

// The chunks of `vectors` vectors for `pixels` (1 or 2) pixels at a time, as equal as whole vectors allow.
std::vector<ContribChunk> ContribChunks(int vectors, int pixels) {
  const int most = std::min(kMaxChunkVectors, kAccumulators / pixels);
  const int count = static_cast<int>(CeilDiv(vectors, most));
  std::vector<ContribChunk> chunks;
  for (int i = 0, begin = 0; i < count; ++i) {
    const int end = static_cast<int>(static_cast<int64_t>(vectors) * (i + 1) / count);
    chunks.push_back({static_cast<int64_t>(begin) * kLanes, InputGradPixelsFor<kMaxChunkVectors>(end - begin, pixels)});
    begin = end;
  }
  return chunks;
}

ffi::Error ConvInputGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w,
                         ffi::ResultBuffer<ffi::F32> dx, int64_t stride_h, int64_t stride_w, int64_t dilation_h,
                         int64_t dilation_w, int64_t pad_top, int64_t pad_left) {
  Geometry g;
  if (ffi::Error error = MakeGeometry(dx->dimensions(), w.dimensions(), dy.dimensions(), stride_h, stride_w,
                                      dilation_h, dilation_w, pad_top, pad_left, &g);
      error.failure())
    return error;
  // Runs of contributions: one per kernel row when dw == 1 (kw * C floats), else one per tap (C
  // floats). Each run is stored padded to whole vectors with zeros, so it is added to the padded
  // gradient in whole vectors (the zeros land on the next run's cells, or on the slack at the end).
  const bool merged = g.dw == 1;
  const int64_t runs = merged ? g.kh : g.kh * g.kw, run = merged ? g.kw * g.c : g.c;
  const int64_t run_vectors = CeilDiv(run, kLanes), rv = runs * run_vectors * kLanes;
  if (rv > kMaxScatterFloats) return ffi::Error::InvalidArgument("input gradient: runs too long");
  // wt [K][rv]: wt[ch][q * run_vectors * kLanes + e] = w[tap (q, e)][ch], zero for e >= run.
  AlignedFloats wt(g.k * rv);
  const float* wd = w.typed_data();
  for (int64_t q = 0; q < runs; ++q)
    for (int64_t e = 0; e < run; ++e)
      for (int64_t ch = 0; ch < g.k; ++ch) wt[ch * rv + q * run_vectors * kLanes + e] = wd[(q * run + e) * g.k + ch];
  const int64_t hp = (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1;  // padded rows the output touches
  const int64_t image_floats = hp * g.ws * g.c;
  const int workers = static_cast<int>(std::min<int64_t>(MaxWorkers(pool), g.n));
  Scratch scratch(workers, image_floats + run_vectors * kLanes + 2 * rv);
  const int vectors = static_cast<int>(rv / kLanes);
  const std::vector<ContribChunk> singles = ContribChunks(vectors, 1), pairs = ContribChunks(vectors, 2);
  const float* grad = dy.typed_data();
  float* out = dx->typed_data();
  ParallelFor(pool, g.n, workers, [&](int worker, int64_t n) {
    float* padded = scratch[worker];
    float* contrib = padded + image_floats + run_vectors * kLanes;
    std::fill(padded, contrib, 0.0f);
    for (int64_t oh = 0; oh < g.oh; ++oh) {
      const float* dy_row = grad + (n * g.oh + oh) * g.ow * g.k;
      for (int64_t ow = 0; ow < g.ow;) {
        const int pixels = ow + 1 < g.ow ? 2 : 1;
        for (const ContribChunk& chunk : pixels == 2 ? pairs : singles)
          chunk.fn(dy_row + ow * g.k, g.k, wt.data() + chunk.offset, rv, contrib + chunk.offset);
        for (int p = 0; p < pixels; ++p, ++ow) {
          for (int64_t q = 0; q < runs; ++q) {
            const int64_t i = merged ? q : q / g.kw, j = merged ? 0 : q % g.kw;
            float* dst = padded + ((oh * g.sh + i * g.dh) * g.ws + ow * g.sw + j * g.dw) * g.c;
            AddVectors(dst, contrib + p * rv + q * run_vectors * kLanes, run_vectors);
          }
        }
      }
    }
    // dx (h, col) = padded (h + top, col + left) where that lies inside the padded extent, else 0.
    float* image = out + n * g.h * g.w * g.c;
    for (int64_t h = 0; h < g.h; ++h) {
      float* dst = image + h * g.w * g.c;
      const int64_t ph = h + g.top;
      if (ph < 0 || ph >= hp) {
        std::fill(dst, dst + g.w * g.c, 0.0f);
        continue;
      }
      const int64_t col_begin = std::clamp<int64_t>(-g.left, 0, g.w), col_end = std::clamp<int64_t>(g.ws - g.left, col_begin, g.w);
      std::fill(dst, dst + col_begin * g.c, 0.0f);
      std::memcpy(dst + col_begin * g.c, padded + (ph * g.ws + col_begin + g.left) * g.c,
                  (col_end - col_begin) * g.c * sizeof(float));
      std::fill(dst + col_end * g.c, dst + g.w * g.c, 0.0f);
    }
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// Per-channel sums for BatchNorm: out [2, C] = (sum over rows of a, sum over rows of a * b) for
// a, b [rows, C] (any leading dimensions; the last is C). Rows are summed in a fixed number of
// groups, each in order, and the groups added in order (deterministic, as the kernel gradient).

void ChannelSumsRows(const float* a, const float* b, int64_t row_begin, int64_t row_end, int64_t c, float* sums,
                     float* dots) {
  // Rows outer, channel vectors inner: one pass over memory; the accumulators stay in L1.
  const int64_t vectors = c / kLanes;
  std::vector<Vec> s(vectors, Vec{}), d(vectors, Vec{});
  std::vector<float> s_tail(c - vectors * kLanes, 0.0f), d_tail(c - vectors * kLanes, 0.0f);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* pa = a + r * c;
    const float* pb = b + r * c;
    for (int64_t v = 0; v < vectors; ++v) {
      const Vec av = Load(pa + v * kLanes);
      s[v] += av;
      d[v] += av * Load(pb + v * kLanes);
    }
    for (int64_t ch = vectors * kLanes; ch < c; ++ch) {
      s_tail[ch - vectors * kLanes] += pa[ch];
      d_tail[ch - vectors * kLanes] += pa[ch] * pb[ch];
    }
  }
  for (int64_t v = 0; v < vectors; ++v) {
    Store(sums + v * kLanes, s[v], kLanes);
    Store(dots + v * kLanes, d[v], kLanes);
  }
  for (int64_t ch = vectors * kLanes; ch < c; ++ch) {
    sums[ch] = s_tail[ch - vectors * kLanes];
    dots[ch] = d_tail[ch - vectors * kLanes];
  }
}

constexpr int64_t kChannelSumGroups = 16;

ffi::Error ChannelSums(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                       ffi::ResultBuffer<ffi::F32> out) {
  const auto ad = a.dimensions(), bd = b.dimensions(), od = out->dimensions();
  if (ad.size() < 1 || ad.size() != bd.size() || !std::equal(ad.begin(), ad.end(), bd.begin()))
    return ffi::Error::InvalidArgument("channel sums: a and b must have the same shape");
  const int64_t c = ad[ad.size() - 1];
  if (od.size() != 2 || od[0] != 2 || od[1] != c) return ffi::Error::InvalidArgument("channel sums: output must be [2, C]");
  const int64_t rows = c == 0 ? 0 : static_cast<int64_t>(a.element_count()) / c;
  const int64_t groups = std::max<int64_t>(1, std::min(kChannelSumGroups, rows));
  std::vector<float> partial(groups * 2 * c, 0.0f);
  const float* pa = a.typed_data();
  const float* pb = b.typed_data();
  ParallelFor(pool, groups, MaxWorkers(pool), [&](int, int64_t group) {
    float* sums = partial.data() + group * 2 * c;
    ChannelSumsRows(pa, pb, group * rows / groups, (group + 1) * rows / groups, c, sums, sums + c);
  });
  float* result = out->typed_data();
  std::fill(result, result + 2 * c, 0.0f);
  for (int64_t group = 0; group < groups; ++group)
    for (int64_t e = 0; e < 2 * c; ++e) result[e] += partial[group * 2 * c + e];
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// Max pooling over non-overlapping windows (windows equal to strides, VALID; research.models.pooling):
// x [N, OH * wh, OW * ww, C] (cropped to whole windows) -> y [N, OH, OW, C], and its gradient as one
// result per window tap (a, b), row-major: wh * ww pieces [N, OH, OW, C], piece (a, b) holding dy
// where x[n, oh * wh + a, ow * ww + b, c] is its window's first x == y in row-major order and zeros
// elsewhere (a window whose maximum is NaN gets none). These are the pieces the reshape path's
// gradient computes; research.models.pooling stacks them into dx the same way, so the program
// after them -- the convolution bias gradients XLA sums piece by piece -- is unchanged, bit for bit.
// A task is a block of output rows (image, output row). Each output pixel reads its wh * ww taps as
// vectors of up to kLanes channels, masked when C is not a multiple of kLanes. (Loading a window
// row of ww pixels as one vector and permuting its pixels into line made the forward pass of
// LeNet's 6 channels 165 -> 100 us on one core, but its training step no faster.) Every output
// element is computed by one task alone: results do not depend on the thread count.

typedef int32_t IVec __attribute__((vector_size(kLanes * sizeof(float))));

inline IVec Bits(const Vec& v) { return reinterpret_cast<IVec>(v); }
inline Vec FromBits(const IVec& v) { return reinterpret_cast<Vec>(v); }

// XLA's maximum (lax.max): NaN when either operand is NaN, +0 over -0. Commutative and
// associative, so the order in which a window is reduced does not change the result.
inline Vec Maximum(const Vec& a, const Vec& b) {
  Vec m = a > b ? a : b;                          // b where equal or unordered
  m = a == b ? FromBits(Bits(a) & Bits(b)) : m;  // equal: the same bits, or +0 & -0 = +0
  return a != a ? a : m;                          // a NaN (b NaN: m is b)
}

struct PoolGeometry {
  int64_t n, oh, ow, c;  // output [n, oh, ow, c]
  int64_t wh, ww;        // window (= strides); input [n, oh * wh, ow * ww, c]
  int64_t row;           // floats per input row: ow * ww * c
};

ffi::Error MakePoolGeometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> y, int64_t wh, int64_t ww,
                            PoolGeometry* g) {
  if (x.size() != 4 || y.size() != 4) return ffi::Error::InvalidArgument("max pool: expected rank-4 arrays");
  if (wh < 1 || ww < 1) return ffi::Error::InvalidArgument("max pool: windows must be >= 1");
  if (y[0] != x[0] || y[3] != x[3] || x[1] != y[1] * wh || x[2] != y[2] * ww)
    return ffi::Error::InvalidArgument("max pool: input must be [N, OH * wh, OW * ww, C] for an output [N, OH, OW, C]");
  *g = PoolGeometry{y[0], y[1], y[2], y[3], wh, ww, x[2] * x[3]};
  return ffi::Error::Success();
}

// Output rows [begin, end) of the pool; output row r (image, row) reads input rows [r * wh, (r + 1) * wh).
void MaxPoolRows(const PoolGeometry& g, const float* x, float* y, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const float* in = x + r * g.wh * g.row;
    float* out = y + r * g.ow * g.c;
    for (int64_t ow = 0; ow < g.ow; ++ow) {
      for (int64_t c0 = 0; c0 < g.c; c0 += kLanes) {
        const int lanes = static_cast<int>(std::min<int64_t>(kLanes, g.c - c0));
        const float* window = in + ow * g.ww * g.c + c0;
        Vec m = LoadLanes(window, lanes);
        for (int64_t a = 0; a < g.wh; ++a)
          for (int64_t b = a == 0 ? 1 : 0; b < g.ww; ++b)
            m = Maximum(m, LoadLanes(window + a * g.row + b * g.c, lanes));
        Store(out + ow * g.c + c0, m, lanes);
      }
    }
  }
}

// Gradient pieces of output rows [begin, end): taps[a * ww + b] [n, oh, ow, c].
void MaxPoolGradRows(const PoolGeometry& g, const float* x, const float* y, const float* dy, float* const* taps,
                     int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const float* in = x + r * g.wh * g.row;
    for (int64_t ow = 0; ow < g.ow; ++ow) {
      for (int64_t c0 = 0; c0 < g.c; c0 += kLanes) {
        const int lanes = static_cast<int>(std::min<int64_t>(kLanes, g.c - c0));
        const int64_t o = (r * g.ow + ow) * g.c + c0;
        const Vec yv = LoadLanes(y + o, lanes), dv = LoadLanes(dy + o, lanes);
        IVec taken = {};
        for (int64_t a = 0; a < g.wh; ++a) {
          for (int64_t b = 0; b < g.ww; ++b) {
            const IVec first = (LoadLanes(in + a * g.row + (ow * g.ww + b) * g.c + c0, lanes) == yv) & ~taken;
            taken |= first;
            Store(taps[a * g.ww + b] + o, first ? dv : Vec{}, lanes);
          }
        }
      }
    }
  }
}

// Output floats per task.
constexpr int64_t kPoolTaskFloats = 2048;

// Runs body(first output row, end) over blocks of the n * oh output rows on the pool.
template <typename Body>
void ForPoolRows(ffi::ThreadPool& pool, const PoolGeometry& g, const Body& body) {
  const int64_t rows = g.n * g.oh;
  if (rows == 0 || g.ow == 0 || g.c == 0) return;
  const int64_t block = std::max<int64_t>(1, kPoolTaskFloats / (g.ow * g.c));
  ParallelFor(pool, CeilDiv(rows, block), MaxWorkers(pool), [&](int, int64_t task) {
    body(task * block, std::min(rows, (task + 1) * block));
  });
}

ffi::Error MaxPool(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y, int64_t window_h,
                   int64_t window_w) {
  PoolGeometry g;
  if (ffi::Error error = MakePoolGeometry(x.dimensions(), y->dimensions(), window_h, window_w, &g); error.failure())
    return error;
  const float* input = x.typed_data();
  float* output = y->typed_data();
  ForPoolRows(pool, g, [&](int64_t begin, int64_t end) { MaxPoolRows(g, input, output, begin, end); });
  return ffi::Error::Success();
}

ffi::Error MaxPoolGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> y,
                       ffi::Buffer<ffi::F32> dy, ffi::RemainingRets taps, int64_t window_h, int64_t window_w) {
  PoolGeometry g;
  if (ffi::Error error = MakePoolGeometry(x.dimensions(), y.dimensions(), window_h, window_w, &g); error.failure())
    return error;
  const auto yd = y.dimensions(), dyd = dy.dimensions();
  if (!std::equal(yd.begin(), yd.end(), dyd.begin(), dyd.end()) || static_cast<int64_t>(taps.size()) != g.wh * g.ww)
    return ffi::Error::InvalidArgument("max pool gradient: dy must be shaped as y, with wh * ww results");
  std::vector<float*> pieces;
  for (size_t t = 0; t < taps.size(); ++t) {
    ffi::ErrorOr<ffi::Result<ffi::Buffer<ffi::F32>>> piece = taps.get<ffi::Buffer<ffi::F32>>(t);
    if (!piece.has_value()) return piece.error();
    const auto pd = (*piece)->dimensions();
    if (!std::equal(yd.begin(), yd.end(), pd.begin(), pd.end()))
      return ffi::Error::InvalidArgument("max pool gradient: each result must be shaped as y");
    pieces.push_back((*piece)->typed_data());
  }
  const float* input = x.typed_data();
  const float* pooled = y.typed_data();
  const float* grad = dy.typed_data();
  ForPoolRows(pool, g, [&](int64_t begin, int64_t end) {
    MaxPoolGradRows(g, input, pooled, grad, pieces.data(), begin, end);
  });
  return ffi::Error::Success();
}

// The convolution handlers' binding: the thread pool, two f32 operands, one f32 result, geometry.
auto ConvBinding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Attr<int64_t>("stride_h")
      .Attr<int64_t>("stride_w")
      .Attr<int64_t>("dilation_h")
      .Attr<int64_t>("dilation_w")
      .Attr<int64_t>("pad_top")
      .Attr<int64_t>("pad_left");
}

// ---------------------------------------------------------------------------------------------
// Kernel flip: wt [kh, kw, K, C] from w [kh, kw, C, K], wt[i][j][k][c] = w[kh-1-i][kw-1-j][c][k]: the
// kernel that runs a convolution's input gradient as a forward convolution of dy (dilated by the
// strides where they are > 1). Each
// tap's C x K matrix is transposed in 8 x 8 tiles (AVX: three shuffle stages on eight registers),
// the tasks being blocks of a tap's rows. XLA's own transpose of this read every input element
// from a new cache line: ResNet-50's 3x3 512-channel kernels (9.4 MB) took 5.8-6.0 ms each.

constexpr int64_t kFlipTile = 8;
constexpr int64_t kFlipTaskRows = 64;

// dst[c][k] = src[k][c] for one 8 x 8 tile (src rows `src_stride` floats apart, dst rows `dst_stride`).
inline void TransposeTile(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
#if defined(__AVX__)
  __m256 r[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * src_stride);
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  _mm256_storeu_ps(dst + 0 * dst_stride, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + 1 * dst_stride, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * dst_stride, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * dst_stride, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * dst_stride, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * dst_stride, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * dst_stride, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * dst_stride, _mm256_permute2f128_ps(u3, u7, 0x31));
#else
  for (int64_t i = 0; i < kFlipTile; ++i)
    for (int64_t j = 0; j < kFlipTile; ++j) dst[j * dst_stride + i] = src[i * src_stride + j];
#endif
}

ffi::Error FlipKernel(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> wt) {
  const auto dims = w.dimensions();
  if (dims.size() != 4) return ffi::Error::InvalidArgument("flip_kernel: the kernel must be [kh, kw, C, K]");
  const int64_t taps = dims[0] * dims[1], c = dims[2], k = dims[3];
  const auto out = wt->dimensions();
  if (out.size() != 4 || out[0] != dims[0] || out[1] != dims[1] || out[2] != k || out[3] != c)
    return ffi::Error::InvalidArgument("flip_kernel: the result must be [kh, kw, K, C]");
  const float* src = w.typed_data();
  float* dst = wt->typed_data();
  const int64_t blocks = CeilDiv(c, kFlipTaskRows);
  ParallelFor(pool, taps * blocks, MaxWorkers(pool), [&](int, int64_t task) {
    const int64_t tap = task / blocks, c_begin = task % blocks * kFlipTaskRows;
    const int64_t c_end = std::min(c, c_begin + kFlipTaskRows);
    const float* from = src + (taps - 1 - tap) * c * k;  // [C][K] of the mirrored tap
    float* to = dst + tap * k * c;                       // [K][C]
    const int64_t c_tiles = c_begin + (c_end - c_begin) / kFlipTile * kFlipTile, k_tiles = k / kFlipTile * kFlipTile;
    for (int64_t ci = c_begin; ci < c_tiles; ci += kFlipTile)
      for (int64_t ki = 0; ki < k_tiles; ki += kFlipTile) TransposeTile(from + ci * k + ki, k, to + ki * c + ci, c);
    for (int64_t ci = c_begin; ci < c_end; ++ci) {  // the rest: columns past the last whole tile, rows past it
      for (int64_t ki = ci < c_tiles ? k_tiles : 0; ki < k; ++ki) to[ki * c + ci] = from[ci * k + ki];
    }
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// Store: the identity, as a call XLA cannot fuse into (research.models.native_cpu.store). Its
// result aliases its operand, so in the usual case there is nothing to do; where XLA gave the two
// separate buffers, the bytes are copied in 1 MiB blocks on the pool.

constexpr int64_t kStoreBlockBytes = int64_t{1} << 20;

ffi::Error StoreArray(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y) {
  const int64_t bytes = static_cast<int64_t>(x.size_bytes());
  if (bytes != static_cast<int64_t>(y->size_bytes())) return ffi::Error::InvalidArgument("store: sizes differ");
  const char* from = static_cast<const char*>(x.untyped_data());
  char* to = static_cast<char*>(y->untyped_data());
  if (from == to) return ffi::Error::Success();
  const int64_t blocks = (bytes + kStoreBlockBytes - 1) / kStoreBlockBytes;
  ParallelFor(pool, blocks, MaxWorkers(pool), [&](int, int64_t block) {
    const int64_t begin = block * kStoreBlockBytes;
    std::memcpy(to + begin, from + begin, static_cast<size_t>(std::min(kStoreBlockBytes, bytes - begin)));
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(ResearchChannelSums, ChannelSums,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(ResearchFlipKernel, FlipKernel,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(ResearchStore, StoreArray,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(ResearchMaxPool, MaxPool,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("window_h")
                                  .Attr<int64_t>("window_w"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(ResearchMaxPoolGrad, MaxPoolGrad,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .RemainingRets()
                                  .Attr<int64_t>("window_h")
                                  .Attr<int64_t>("window_w"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(ResearchConvInputGrad, ConvInputGrad, ConvBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(ResearchConvForward, ConvForward, ConvBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(ResearchConvKernelGrad, ConvKernelGrad, ConvBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(ResearchConvKernelGradLanes, ConvKernelGradLanes, ConvBinding());

// The build's vector width in floats, the most floats of one pixel's contributions the scatter
// input gradient takes (research_conv_input_grad) and the most taps of a kernel row the pixel-lane
// kernel gradient takes (research_conv_kernel_grad_lanes), for native_cpu.py (plain C calls, no FFI).
extern "C" int ResearchKernelLanes() { return kLanes; }
extern "C" int ResearchMaxScatterFloats() { return kMaxScatterFloats; }
extern "C" int ResearchMaxLaneTaps() { return kMaxLaneTaps; }
