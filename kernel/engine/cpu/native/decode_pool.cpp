// Every layer of a pure-decode step as one job on the library's worker pool (pool.h), when every product is a block
// format (qgemm.h): one dispatch per step, all threads running the layer loop together, instead of an OpenMP fork and
// join per op (~9 per layer, each paying a barrier and a wake-up). Per layer, the phases and their tasks:
//   norm      x += the last layer's MLP output, h = rms_norm(x) w, h quantized for the qkv product   one per row
//   qkv       the product, by tiles of weight rows (qgemm_parts.h)                               tiles
//   attend    the q/k/v bias, q/k norm and rotary on the query heads of KV head g and on key g, key and value g
//             into the cache, the heads' attention over the row's context (its window), the result quantized for
//             the o product                                                                       one per (row, g)
//   quant     the attention rows quantized (only when a KV head's query heads are not whole blocks)  one per row
//   o         the product                                                                          tiles
//   mlp norm  (o's post norm,) x += o, h = rms_norm(x) w, quantized for gate_up                    one per row
//   gate_up   the product                                                                          tiles
//   silu      silu (or gelu_tanh)(gate) * up and its quantization, by kSiluChunk inputs             rows x chunks
//   down      the product                                                                          tiles
// (the norm phase applies the last MLP output's post norm before adding it) and after the job x += the last MLP
// output. Every value is computed by the same row code as the separate ops
// (ops_rows.h, qgemm_parts.h) in the same order and rounded to x's type where they round it, so a step gives the same
// bits as decode_layers.cpp's loop over those ops, at any thread count. A (row, g) task writes only its own row's slot
// of KV head g and reads only its own row's context, so fusing the cache write into the attention is safe.
#include "ops.h"
#include "ops_rows.h"
#include "pool.h"
#include "qgemm_parts.h"

#include <ATen/Parallel.h>

#include <array>
#include <limits>
#include <vector>

namespace aios {
namespace {

using blocks::kBlock;

constexpr int64_t kBlockKinds = 3;   // ProductKind.Q8_0 (native/__init__.py): kinds from here on are qgemm's formats
enum Stage : int64_t { kNorm, kQkv, kAttend, kQuant, kO, kMlpNorm, kGateUp, kSilu, kDown, kStages };
constexpr int64_t kSiluChunk = 1024;   // inputs per silu task, a multiple of 32: ~8 tasks per row at 8192

struct Product {
  blocks::Format f;
  blocks::Weights w;
  blocks::RowKernels row;
  blocks::TileKernel tile;
  int64_t N;
  const blocks::TaskPlan* plan;   // its decode-row tasks' weight rows
  const Product* next;            // the step's next product (read ahead at this one's end), or null
};

struct Scratch {   // one thread's
  std::vector<float> query, acc, scores, gate, up;
  std::array<blocks::TileScratch, 4> tiles;
};

template <typename T>
class DecodeJob final : public pool::Job {
 public:
  // Everything checked by decode_layers_pooled; the job only reads and writes through these pointers.
  int64_t layers = 0, rows = 0, E = 0, H = 0, Hkv = 0, D = 0, G = 0, F = 0, S = 0, max_blocks = 0, block_size = 0;
  int64_t x_stride = 0;
  double eps = 0, scale = 0;
  bool fused_quant = false, blocked = false, gelu = false;
  T* x = nullptr;
  std::vector<const T*> norms;
  std::vector<const T*> extras;   // kExtras per layer (ops.h), null where the model has none
  std::vector<const T*> cos_of, sin_of;   // per layer
  std::vector<int64_t> windows;   // per layer, 0: the whole context
  std::vector<Product> products;   // 4 per layer: qkv, o, gate_up, down
  const int64_t *positions = nullptr, *slots = nullptr, *tables = nullptr, *lens = nullptr;
  T* kv = nullptr;
  T *h = nullptr, *qkv = nullptr, *q = nullptr, *attn = nullptr, *o = nullptr, *gate_up = nullptr, *act = nullptr,
    *down = nullptr;
  std::array<blocks::ActBuffer, 4> acts;   // the quantized inputs of qkv, o, gate_up, down
  std::vector<Scratch> scratch;

  int64_t phases() const override { return layers * kStages; }

  int64_t tasks(int64_t phase) const override {
    const int64_t l = phase / kStages;
    switch (phase % kStages) {
      case kNorm: case kMlpNorm: return rows;
      case kAttend: return rows * Hkv;
      case kQuant: return fused_quant ? 0 : rows;
      case kSilu: return rows * ((F + kSiluChunk - 1) / kSiluChunk);
      case kQkv: return product_tasks(products[4 * l]);
      case kO: return product_tasks(products[4 * l + 1]);
      case kGateUp: return product_tasks(products[4 * l + 2]);
      default: return product_tasks(products[4 * l + 3]);
    }
  }

  void run(int64_t phase, int64_t task, int thread) override {
    const int64_t l = phase / kStages;
    Scratch& mine = scratch[thread];
    switch (phase % kStages) {
      case kNorm:
        if (l > 0) post_norm(l - 1, kPostMlpNorm, down + task * E);
        row_ops::add_rms_norm_row(x + task * x_stride, l == 0 ? nullptr : down + task * E, norms[2 * l], E, eps,
                                  h + task * E);
        acts[0].quantize(h + task * E, task, E / kBlock);
        return;
      case kQkv: return multiply(products[4 * l], 0, E, task, mine, qkv);
      case kAttend: return attend(l, task / Hkv, task % Hkv, mine);
      case kQuant: return acts[1].quantize(attn + task * H * D, task, H * D / kBlock);
      case kO: return multiply(products[4 * l + 1], 1, H * D, task, mine, o);
      case kMlpNorm:
        post_norm(l, kPostAttnNorm, o + task * E);
        row_ops::add_rms_norm_row(x + task * x_stride, o + task * E, norms[2 * l + 1], E, eps, h + task * E);
        acts[2].quantize(h + task * E, task, E / kBlock);
        return;
      case kGateUp: return multiply(products[4 * l + 2], 2, E, task, mine, gate_up);
      case kSilu: {
        const int64_t chunks = (F + kSiluChunk - 1) / kSiluChunk, t = task / chunks;
        const int64_t i0 = task % chunks * kSiluChunk, n = std::min(kSiluChunk, F - i0);
        const T* in = gate_up + t * 2 * F;
        if (gelu) {
          row_ops::gelu_mul_row(in + i0, in + F + i0, n, mine.gate.data(), mine.up.data(), act + t * F + i0);
        } else {
          row_ops::silu_mul_row(in + i0, in + F + i0, n, mine.gate.data(), mine.up.data(), act + t * F + i0);
        }
        acts[3].quantize_range(act + t * F, t, i0 / kBlock, (i0 + n) / kBlock, F / kBlock);
        return;
      }
      default: return multiply(products[4 * l + 3], 3, F, task, mine, down);
    }
  }

  // A product's output row y [E] normed in place by layer l's post norm e, when the model has one.
  void post_norm(int64_t l, Extra e, T* y) const {
    if (const T* w = extras[kExtras * l + e]) row_ops::rms_norm_row(y, w, E, eps, y);
  }

 private:
  int64_t product_tasks(const Product& p) const {
    return blocked ? blocks::block_tasks(p.N) : p.plan->tasks();
  }

  void multiply(const Product& p, int input, int64_t K, int64_t task, Scratch& mine, T* y) {
    const blocks::Acts a{acts[input].q, acts[input].d, acts[input].s, acts[input].d8, acts[input].h16, acts[input].gp};
    const std::vector<int64_t>& starts = p.plan->starts;
    if (!blocked) {
      blocks::row_range(p.row, p.w, a, rows, p.N, starts[task], starts[task + 1], y);
      // One of the phase's last tasks (taken in order: whoever runs it has nothing left here) reads ahead the next
      // product's task as far from its start as this one is from the end; each thread then likely finds its first
      // task of the next product in the cache (read into it while the attention and norm phases read no weights).
      const int64_t tasks = p.plan->tasks(), ahead = tasks - 1 - task;
      if (p.next != nullptr && ahead < static_cast<int64_t>(scratch.size()) && ahead < p.next->plan->tasks()) {
        const std::vector<int64_t>& next = p.next->plan->starts;
        blocks::prefetch_rows(p.next->w, next[ahead], next[ahead + 1]);
      }
      return;
    }
    mine.tiles[input].prepare(K / kBlock);
    blocks::block_task(p.f, p.tile, p.w, a, rows, p.N, task, mine.tiles[input], y);
  }

  void attend(int64_t l, int64_t b, int64_t g, Scratch& mine) {
    const T* row = qkv + b * (H + 2 * Hkv) * D;
    const T* c = cos_of[l] + positions[b] * D;
    const T* s = sin_of[l] + positions[b] * D;
    const T *bias = extras[kExtras * l + kQkvBias], *qn = extras[kExtras * l + kQNorm],
            *kn = extras[kExtras * l + kKNorm];
    T* kc = kv + l * 2 * S * Hkv * D;
    T* vc = kc + S * Hkv * D;
    T biased[512];
    // head i of the row (q heads, then k, then v), with its bias added as the op loop's qkv.add_(bias) rounds it
    auto head = [&](int64_t i) -> const T* {
      if (!bias) return row + i * D;
      row_ops::add_bias(row + i * D, bias + i * D, D, biased);
      return biased;
    };
    for (int64_t i = g * G; i < (g + 1) * G; ++i) {
      row_ops::norm_rope_head(head(i), qn, eps, c, s, D, q + (b * H + i) * D);
    }
    const int64_t at = (slots[b] * Hkv + g) * D;
    row_ops::norm_rope_head(head(H + g), kn, eps, c, s, D, kc + at);
    const T* v = head(H + Hkv + g);
    std::copy(v, v + D, vc + at);
    const int64_t first = (b * H + g * G) * D, n = lens[b];
    row_ops::attend_heads(q + first, G, D, scale, kc, vc, Hkv, g, tables + b * max_blocks,
                          row_ops::window_start(n, windows[l]), n, block_size, mine.query.data(), mine.scores.data(),
                          mine.acc.data(), attn + first);
    if (fused_quant) {
      acts[1].quantize_range(attn + b * H * D, b, g * G * D / kBlock, (g + 1) * G * D / kBlock, H * D / kBlock);
    }
  }
};

}  // namespace

// decode_layers (decode_layers.cpp) on the pool, when every product is a block kind (kinds >= kBlockKinds) and each
// product position has the same inputs in every layer; false (nothing done) otherwise. Checks everything the ops
// check before any thread starts (decode_layers has checked the list lengths and the extras): a task cannot fail.
bool decode_layers_pooled(at::Tensor x, const std::vector<at::Tensor>& norms, const std::vector<int64_t>& kinds,
                          const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& extras,
                          const std::vector<at::Tensor>& cos, const std::vector<at::Tensor>& signed_sin,
                          const std::vector<int64_t>& windows, const at::Tensor& positions, at::Tensor kv,
                          const at::Tensor& slots, const at::Tensor& block_tables, const at::Tensor& context_lens,
                          int64_t block_size, int64_t n_heads, int64_t n_kv_heads, double eps, double scale,
                          bool gelu) {
  for (int64_t kind : kinds) {
    if (kind < kBlockKinds) return false;
  }
  const int64_t layers = kv.size(0), rows = x.size(0), E = x.size(1), D = kv.size(4), S = kv.size(2);
  TORCH_CHECK(x.dim() == 2 && x.stride(1) == 1, "x must be [rows, n] with unit stride along n");
  TORCH_CHECK(kv.dim() == 5 && kv.size(1) == 2 && kv.size(3) == n_kv_heads && kv.is_contiguous() &&
              kv.scalar_type() == x.scalar_type(), "kv must be [L, 2, S, Hkv, D] in x's dtype");
  TORCH_CHECK(D <= 512 && n_kv_heads > 0 && n_heads % n_kv_heads == 0, "head size at most 512, H a multiple of Hkv");
  for (const at::Tensor& w : norms) {
    TORCH_CHECK(w.is_contiguous() && w.numel() == E && w.scalar_type() == x.scalar_type(), "bad norm weight");
  }
  int64_t P = std::numeric_limits<int64_t>::max();   // positions every layer's tables have
  for (int64_t l = 0; l < layers; ++l) {
    const at::Tensor &c = cos[l], &s = signed_sin[l];
    TORCH_CHECK(c.is_contiguous() && s.is_contiguous() && c.dim() == 2 && c.size(1) == D && s.sizes() == c.sizes() &&
                c.scalar_type() == x.scalar_type() && s.scalar_type() == x.scalar_type(),
                "rotary tables must be [P, D] in x's dtype");
    P = std::min(P, c.size(0));
  }
  TORCH_CHECK(positions.scalar_type() == at::kLong && slots.scalar_type() == at::kLong && positions.numel() == rows &&
              slots.numel() == rows, "positions and slots: [T] int64");
  TORCH_CHECK(block_tables.scalar_type() == at::kLong && context_lens.scalar_type() == at::kLong, "int64 tables");
  const at::Tensor pos = positions.contiguous(), slot = slots.contiguous(), tables = block_tables.contiguous(),
                   lens = context_lens.contiguous();
  TORCH_CHECK(tables.dim() == 2 && tables.size(0) == rows && lens.numel() == rows, "one table and length per query");
  const int64_t max_blocks = tables.size(1);
  const int64_t *pp = pos.data_ptr<int64_t>(), *sp = slot.data_ptr<int64_t>(), *tp = tables.data_ptr<int64_t>(),
                *lp = lens.data_ptr<int64_t>();
  int64_t longest = 1;
  for (int64_t t = 0; t < rows; ++t) {
    TORCH_CHECK(pp[t] >= 0 && pp[t] < P && sp[t] >= 0 && sp[t] < S, "position or slot out of range");
    TORCH_CHECK(lp[t] > 0 && lp[t] <= max_blocks * block_size, "context length out of range");
    for (int64_t i = 0; i < (lp[t] + block_size - 1) / block_size; ++i) {
      TORCH_CHECK(tp[t * max_blocks + i] >= 0 && (tp[t * max_blocks + i] + 1) * block_size <= S, "block out of range");
    }
    longest = std::max(longest, lp[t]);
  }
  const int64_t qkv_n = (n_heads + 2 * n_kv_heads) * D, F = weights[4].size(0) / 2;
  const std::array<int64_t, 4> inputs = {E, n_heads * D, E, F}, outputs = {qkv_n, E, 2 * F, E};
  const blocks::Isa isa = blocks::resolve(-1);
  const int threads = std::max(1, at::get_num_threads());
  std::vector<Product> products;
  std::array<int64_t, 4> gp = {0, 0, 0, 0};
  // Decode-row tasks per distinct (outputs, row bytes), sized by bytes and shrinking toward a phase's end
  // (qgemm_parts.h, TaskPlan; AIOS_POOL_TASKS); reserved so the products' pointers into it stay valid.
  const blocks::Split split = blocks::split_mode();
  std::vector<std::pair<std::array<int64_t, 2>, blocks::TaskPlan>> plans;
  plans.reserve(4 * layers);
  auto plan_for = [&](int64_t N, int64_t row_bytes) -> const blocks::TaskPlan* {
    for (const auto& [key, plan] : plans) {
      if (key[0] == N && key[1] == row_bytes) return &plan;
    }
    plans.emplace_back(std::array<int64_t, 2>{N, row_bytes}, blocks::plan_tasks(N, row_bytes, threads, split));
    return &plans.back().second;
  };
  for (int64_t p = 0; p < 4 * layers; ++p) {
    const blocks::Format f = blocks::check_format(kinds[p] - kBlockKinds);
    const blocks::Weights w = blocks::check_weights(f, weights[2 * p], weights[2 * p + 1], inputs[p % 4]);
    TORCH_CHECK(weights[2 * p].size(0) == outputs[p % 4], "product ", p, " has ", weights[2 * p].size(0),
                " outputs, not ", outputs[p % 4]);
    if (p >= 4 && w.gp != gp[p % 4]) return false;   // padded differently from layer 0's: the op loop serves
    gp[p % 4] = w.gp;
    products.push_back({f, w, blocks::kernel_for(isa, f), blocks::tile_kernel_for(isa, f), outputs[p % 4],
                        plan_for(outputs[p % 4], blocks::weight_row_bytes(f, w)), nullptr});
  }
  if (blocks::read_ahead()) {   // AIOS_POOL_PREFETCH=1 (qgemm_parts.h)
    for (size_t p = 0; p + 1 < products.size(); ++p) products[p].next = &products[p + 1];
  }
  auto buffer = [&](int64_t n) { return at::empty({rows, n}, x.options()); };
  at::Tensor h = buffer(E), qkv = buffer(qkv_n), q = buffer(n_heads * D), attn = buffer(n_heads * D), o = buffer(E),
             gate_up = buffer(2 * F), act = buffer(F), down = buffer(E);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "decode_layers_pooled", [&] {
    DecodeJob<scalar_t> job;
    job.layers = layers, job.rows = rows, job.E = E, job.H = n_heads, job.Hkv = n_kv_heads, job.D = D;
    job.G = n_heads / n_kv_heads, job.F = F, job.S = S, job.max_blocks = max_blocks, job.block_size = block_size;
    job.x_stride = x.stride(0), job.eps = eps, job.scale = scale, job.gelu = gelu;
    job.fused_quant = job.G * D % kBlock == 0;
    job.blocked = rows > blocks::kRowPathRows;
    job.x = x.data_ptr<scalar_t>();
    for (const at::Tensor& w : norms) job.norms.push_back(w.data_ptr<scalar_t>());
    job.products = std::move(products);
    for (const at::Tensor& e : extras) job.extras.push_back(e.numel() ? e.data_ptr<scalar_t>() : nullptr);
    for (int64_t l = 0; l < layers; ++l) {
      job.cos_of.push_back(cos[l].data_ptr<scalar_t>()), job.sin_of.push_back(signed_sin[l].data_ptr<scalar_t>());
    }
    job.windows = windows;
    job.positions = pp, job.slots = sp, job.tables = tp, job.lens = lp;
    job.kv = kv.data_ptr<scalar_t>();
    job.h = h.data_ptr<scalar_t>(), job.qkv = qkv.data_ptr<scalar_t>(), job.q = q.data_ptr<scalar_t>();
    job.attn = attn.data_ptr<scalar_t>(), job.o = o.data_ptr<scalar_t>(), job.gate_up = gate_up.data_ptr<scalar_t>();
    job.act = act.data_ptr<scalar_t>(), job.down = down.data_ptr<scalar_t>();
    for (int i = 0; i < 4; ++i) {
      job.acts[i].reserve(rows, gp[i]);
      job.acts[i].layout(rows, gp[i]);
    }
    job.scratch.resize(threads);
    for (Scratch& mine : job.scratch) {   // sized here: a task allocates nothing
      mine.query.resize(job.G * D), mine.acc.resize(job.G * D), mine.scores.resize(job.G * longest);
      mine.gate.resize(kSiluChunk), mine.up.resize(kSiluChunk);
      if (job.blocked) {
        for (int i = 0; i < 4; ++i) mine.tiles[i].prepare(inputs[i] / kBlock);
      }
    }
    pool::run(job, threads);
    for (int64_t t = 0; t < rows; ++t) job.post_norm(layers - 1, kPostMlpNorm, job.down + t * E);
  });
  x.add_(down);
  return true;
}

}  // namespace aios
