/* VTA functional simulator with a load/compute/store cycle model.
 *
 * Executes the binary instruction stream as the hardware's fetch unit would: instructions are
 * dispatched in order to the load queue (LOAD INP/WGT), the compute queue (LOAD UOP/ACC, GEMM, ALU,
 * FINISH) and the store queue (STORE); each stage waits for the dependency tokens its flags pop
 * and pushes tokens when done. Fields are decoded from the 128-bit words with the bit-field layout
 * of apache/tvm-vta include/vta/hw_spec.h, recomputed here from the buffer depths (independently of
 * the Python encoder). Counters are those VTA's own simulator reported; the cycle model charges one
 * GEMM/ALU micro-op iteration per cycle and DMA at the board's AXI width.
 *
 * A malformed stream stops with the index of the offending instruction (never a hang: a stage
 * waiting for a token that is never pushed is a deadlock, reported as such).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OP_LOAD 0
#define OP_STORE 1
#define OP_GEMM 2
#define OP_FINISH 3
#define OP_ALU 4
#define MEM_UOP 0
#define MEM_WGT 1
#define MEM_INP 2
#define MEM_ACC 3
#define MEM_OUT 4

typedef struct {
  int32_t log_batch, log_block, log_uop_depth, log_inp_depth, log_wgt_depth, log_acc_depth;
  int32_t bus_bytes;     /* AXI bytes per cycle (cycle model) */
  int32_t dma_latency;   /* cycles per DMA command (cycle model) */
  int32_t pipe_latency;  /* GEMM/ALU pipeline fill per instruction (cycle model) */
} vta_cfg;

typedef struct {
  uint64_t inp_load_nbytes, wgt_load_nbytes, acc_load_nbytes, uop_load_nbytes, out_store_nbytes;
  uint64_t gemm_counter, alu_counter;
  uint64_t cycles, load_busy, compute_busy, store_busy, gemm_busy, alu_busy;
  int64_t finish_count;
  int64_t error_index;
  char error[256];
} vta_stats;

/* ---- field decoding ------------------------------------------------------------------------ */
typedef struct { int pos, width; } field;
typedef struct {
  field opcode, pop_prev, pop_next, push_prev, push_next;
  field mem[10];   /* memory_type sram_base dram_base y_size x_size x_stride y_pad_0 y_pad_1 x_pad_0 x_pad_1 */
  field loop[5];   /* reset uop_bgn uop_end iter_out iter_in */
  field gemm[6];   /* dst_out dst_in src_out src_in wgt_out wgt_in */
  field alu[7];    /* dst_out dst_in src_out src_in alu_opcode use_imm imm */
  field uop[3];    /* dst src wgt (32-bit word) */
} layout;

static int place(int *pos, int width, int unit) {
  if (*pos / unit != (*pos + width - 1) / unit) *pos = (*pos / unit + 1) * unit;
  int at = *pos;
  *pos += width;
  return at;
}

static void make_layout(const vta_cfg *c, layout *l) {
  int p = 0, i;
  int hdr[5] = {3, 1, 1, 1, 1};
  field *h[5] = {&l->opcode, &l->pop_prev, &l->pop_next, &l->push_prev, &l->push_next};
  for (i = 0; i < 5; ++i) { h[i]->width = hdr[i]; h[i]->pos = place(&p, hdr[i], 64); }
  int after_hdr = p;
  int mw[10] = {3, 16, 32, 16, 16, 16, 4, 4, 4, 4};
  for (i = 0; i < 10; ++i) { l->mem[i].width = mw[i]; l->mem[i].pos = place(&p, mw[i], 64); }
  int lw[5] = {1, c->log_uop_depth, c->log_uop_depth + 1, 14, 14};
  p = after_hdr;
  for (i = 0; i < 5; ++i) { l->loop[i].width = lw[i]; l->loop[i].pos = place(&p, lw[i], 64); }
  int after_loop = p;
  int gw[6] = {c->log_acc_depth, c->log_acc_depth, c->log_inp_depth, c->log_inp_depth,
               c->log_wgt_depth, c->log_wgt_depth};
  for (i = 0; i < 6; ++i) { l->gemm[i].width = gw[i]; l->gemm[i].pos = place(&p, gw[i], 64); }
  p = after_loop;
  int aw[7] = {c->log_acc_depth, c->log_acc_depth, c->log_acc_depth, c->log_acc_depth, 3, 1, 16};
  for (i = 0; i < 7; ++i) { l->alu[i].width = aw[i]; l->alu[i].pos = place(&p, aw[i], 64); }
  int src = c->log_acc_depth > c->log_inp_depth ? c->log_acc_depth : c->log_inp_depth;
  int uw[3] = {c->log_acc_depth, src, c->log_wgt_depth};
  p = 0;
  for (i = 0; i < 3; ++i) { l->uop[i].width = uw[i]; l->uop[i].pos = place(&p, uw[i], 32); }
}

static uint64_t get(const uint64_t w[2], field f) {
  uint64_t v = w[f.pos / 64] >> (f.pos % 64);
  return f.width == 64 ? v : v & ((1ULL << f.width) - 1);
}

static int64_t get_signed(const uint64_t w[2], field f) {
  uint64_t v = get(w, f);
  return (v >> (f.width - 1)) ? (int64_t)v - ((int64_t)1 << f.width) : (int64_t)v;
}

/* ---- the machine --------------------------------------------------------------------------- */
typedef struct {
  vta_cfg c;
  layout l;
  int batch, block;
  int64_t uop_depth, inp_depth, wgt_depth, acc_depth;
  int inp_elem, wgt_elem, acc_elem, out_elem; /* bytes */
  uint32_t *uop;
  int8_t *inp, *wgt;
  int32_t *acc;
  uint8_t *dram;
  int64_t dram_bytes;
  vta_stats *s;
} machine;

static int fail(machine *m, int64_t index, const char *what) {
  m->s->error_index = index;
  snprintf(m->s->error, sizeof(m->s->error), "%s", what);
  return -1;
}

typedef struct {
  uint64_t memory_type, sram_base, dram_base, y_size, x_size, x_stride, y_pad_0, y_pad_1, x_pad_0, x_pad_1;
} mem_insn;

static void decode_mem(machine *m, const uint64_t *w, mem_insn *o) {
  uint64_t *dst = &o->memory_type;
  for (int i = 0; i < 10; ++i) dst[i] = get(w, m->l.mem[i]);
}

static int elem_bytes(machine *m, int type) {
  switch (type) {
    case MEM_UOP: return 4;
    case MEM_WGT: return m->wgt_elem;
    case MEM_INP: return m->inp_elem;
    case MEM_ACC: return m->acc_elem;
    default: return m->out_elem;
  }
}

static int64_t depth_of(machine *m, int type) {
  switch (type) {
    case MEM_UOP: return m->uop_depth;
    case MEM_WGT: return m->wgt_depth;
    case MEM_INP: return m->inp_depth;
    default: return m->acc_depth;
  }
}

static uint8_t *sram_of(machine *m, int type) {
  switch (type) {
    case MEM_UOP: return (uint8_t *)m->uop;
    case MEM_WGT: return (uint8_t *)m->wgt;
    case MEM_INP: return (uint8_t *)m->inp;
    default: return (uint8_t *)m->acc;
  }
}

static uint64_t dma_cycles(machine *m, uint64_t rows, uint64_t row_bytes, uint64_t pad_elems) {
  uint64_t per_row = (row_bytes + m->c.bus_bytes - 1) / m->c.bus_bytes;
  return m->c.dma_latency + rows * per_row + pad_elems;
}

static int run_load(machine *m, int64_t idx, const mem_insn *o, uint64_t *cycles) {
  char msg[200];
  if (o->x_size == 0) { *cycles = 1; return 0; } /* a no-op carrying dependency flags */
  int eb = elem_bytes(m, (int)o->memory_type);
  uint64_t xt = o->x_size + o->x_pad_0 + o->x_pad_1, yt = o->y_size + o->y_pad_0 + o->y_pad_1;
  if (o->sram_base + xt * yt > (uint64_t)depth_of(m, (int)o->memory_type)) {
    snprintf(msg, sizeof msg, "LOAD writes SRAM elements %llu..%llu past the buffer's %lld",
             (unsigned long long)o->sram_base, (unsigned long long)(o->sram_base + xt * yt),
             (long long)depth_of(m, (int)o->memory_type));
    return fail(m, idx, msg);
  }
  if (o->y_size && o->x_stride < o->x_size && o->y_size > 1) return fail(m, idx, "LOAD x_stride < x_size");
  uint64_t last = (o->dram_base + (o->y_size - 1) * o->x_stride + o->x_size) * (uint64_t)eb;
  if (o->y_size == 0 || last > (uint64_t)m->dram_bytes) {
    snprintf(msg, sizeof msg, "LOAD reads DRAM bytes up to %llu past the %lld-byte image",
             (unsigned long long)last, (long long)m->dram_bytes);
    return fail(m, idx, msg);
  }
  uint8_t *sram = sram_of(m, (int)o->memory_type) + o->sram_base * eb;
  const uint8_t *dram = m->dram + o->dram_base * eb;
  memset(sram, 0, xt * o->y_pad_0 * eb);
  sram += xt * o->y_pad_0 * eb;
  for (uint64_t y = 0; y < o->y_size; ++y) {
    memset(sram, 0, o->x_pad_0 * eb);
    sram += o->x_pad_0 * eb;
    memcpy(sram, dram, o->x_size * eb);
    sram += o->x_size * eb;
    memset(sram, 0, o->x_pad_1 * eb);
    sram += o->x_pad_1 * eb;
    dram += o->x_stride * eb;
  }
  memset(sram, 0, xt * o->y_pad_1 * eb);
  uint64_t bytes = o->x_size * o->y_size * eb;
  switch (o->memory_type) {
    case MEM_UOP: m->s->uop_load_nbytes += bytes; break;
    case MEM_WGT: m->s->wgt_load_nbytes += bytes; break;
    case MEM_INP: m->s->inp_load_nbytes += bytes; break;
    default: m->s->acc_load_nbytes += bytes; break;
  }
  *cycles = dma_cycles(m, o->y_size, o->x_size * eb, xt * yt - o->x_size * o->y_size);
  return 0;
}

static int run_store(machine *m, int64_t idx, const mem_insn *o, uint64_t *cycles) {
  char msg[200];
  if (o->x_size == 0) { *cycles = 1; return 0; }
  if (o->memory_type != MEM_OUT) return fail(m, idx, "STORE from a memory other than OUT");
  if (o->y_pad_0 || o->y_pad_1 || o->x_pad_0 || o->x_pad_1) return fail(m, idx, "STORE with padding");
  if (o->sram_base + o->x_size * o->y_size > (uint64_t)m->acc_depth)
    return fail(m, idx, "STORE reads OUT elements past the buffer");
  uint64_t last = (o->dram_base + (o->y_size - 1) * o->x_stride + o->x_size) * (uint64_t)m->out_elem;
  if (o->y_size == 0 || last > (uint64_t)m->dram_bytes) {
    snprintf(msg, sizeof msg, "STORE writes DRAM bytes up to %llu past the %lld-byte image",
             (unsigned long long)last, (long long)m->dram_bytes);
    return fail(m, idx, msg);
  }
  int lanes = m->batch * m->block;
  for (uint64_t y = 0; y < o->y_size; ++y) {
    const int32_t *src = m->acc + (o->sram_base + y * o->x_size) * lanes;
    int8_t *dst = (int8_t *)(m->dram + (o->dram_base + y * o->x_stride) * m->out_elem);
    for (uint64_t k = 0; k < o->x_size * lanes; ++k) dst[k] = (int8_t)(uint8_t)(uint32_t)src[k];
  }
  m->s->out_store_nbytes += o->x_size * o->y_size * m->out_elem;
  *cycles = dma_cycles(m, o->y_size, o->x_size * m->out_elem, 0);
  return 0;
}

static int check_index(machine *m, int64_t idx, uint64_t base, uint64_t it_o, uint64_t f_o, uint64_t it_i,
                       uint64_t f_i, int64_t depth, const char *what) {
  char msg[200];
  uint64_t top = base + (it_o - 1) * f_o + (it_i - 1) * f_i;
  if (top >= (uint64_t)depth) {
    snprintf(msg, sizeof msg, "%s index %llu past the buffer's %lld elements", what, (unsigned long long)top,
             (long long)depth);
    return fail(m, idx, msg);
  }
  return 0;
}

static int run_gemm_alu(machine *m, int64_t idx, const uint64_t *w, int opcode, uint64_t *cycles) {
  uint64_t reset = get(w, m->l.loop[0]), bgn = get(w, m->l.loop[1]), end = get(w, m->l.loop[2]);
  uint64_t it_o = get(w, m->l.loop[3]), it_i = get(w, m->l.loop[4]);
  const field *f = opcode == OP_GEMM ? m->l.gemm : m->l.alu;
  uint64_t d_o = get(w, f[0]), d_i = get(w, f[1]), s_o = get(w, f[2]), s_i = get(w, f[3]);
  uint64_t w_o = opcode == OP_GEMM ? get(w, f[4]) : 0, w_i = opcode == OP_GEMM ? get(w, f[5]) : 0;
  int alu_op = opcode == OP_ALU ? (int)get(w, f[4]) : 0, use_imm = opcode == OP_ALU ? (int)get(w, f[5]) : 0;
  int32_t imm = opcode == OP_ALU ? (int32_t)get_signed(w, f[6]) : 0;
  if (end > (uint64_t)m->uop_depth || bgn > end) return fail(m, idx, "micro-op range outside the uop buffer");
  if (opcode == OP_ALU && alu_op > 4) return fail(m, idx, "unknown ALU opcode");
  uint64_t iters = it_o * it_i * (end - bgn);
  *cycles = iters + m->c.pipe_latency;
  if (iters == 0) return 0;
  int B = m->batch, N = m->block, lanes = B * N;
  const int use_src = opcode == OP_GEMM ? !reset : !use_imm;
  for (uint64_t u = bgn; u < end; ++u) {
    uint32_t word[2] = {m->uop[u], 0};
    uint64_t ww[2] = {word[0], 0};
    uint64_t dst = get(ww, m->l.uop[0]), src = get(ww, m->l.uop[1]), wgt = get(ww, m->l.uop[2]);
    if (check_index(m, idx, dst, it_o, d_o, it_i, d_i, m->acc_depth, "accumulator")) return -1;
    if (use_src && check_index(m, idx, src, it_o, s_o, it_i, s_i, opcode == OP_GEMM ? m->inp_depth : m->acc_depth,
                               opcode == OP_GEMM ? "input" : "accumulator source")) return -1;
    if (opcode == OP_GEMM && !reset && check_index(m, idx, wgt, it_o, w_o, it_i, w_i, m->wgt_depth, "weight"))
      return -1;
  }
  if (opcode == OP_GEMM && !reset) m->s->gemm_counter += iters;
  if (opcode == OP_ALU) m->s->alu_counter += iters;
  for (uint64_t y = 0; y < it_o; ++y)
    for (uint64_t x = 0; x < it_i; ++x)
      for (uint64_t u = bgn; u < end; ++u) {
        uint64_t ww[2] = {m->uop[u], 0};
        uint64_t dst = get(ww, m->l.uop[0]) + y * d_o + x * d_i;
        uint64_t src = get(ww, m->l.uop[1]) + y * s_o + x * s_i;
        int32_t *acc = m->acc + dst * lanes;
        if (opcode == OP_GEMM) {
          if (reset) { memset(acc, 0, lanes * sizeof(int32_t)); continue; }
          uint64_t wgt = get(ww, m->l.uop[2]) + y * w_o + x * w_i;
          const int8_t *a = m->inp + src * lanes, *b = m->wgt + wgt * N * N;
          for (int i = 0; i < B; ++i)
            for (int j = 0; j < N; ++j) {
              int32_t sum = 0;
              const int8_t *ai = a + i * N, *bj = b + j * N;
              for (int k = 0; k < N; ++k) sum += (int32_t)ai[k] * (int32_t)bj[k];
              acc[i * N + j] = (int32_t)((uint32_t)acc[i * N + j] + (uint32_t)sum);
            }
        } else {
          const int32_t *s = m->acc + src * lanes;
          for (int k = 0; k < lanes; ++k) {
            int32_t a = acc[k], b = use_imm ? imm : s[k], r;
            switch (alu_op) {
              case 0: r = a < b ? a : b; break;
              case 1: r = a > b ? a : b; break;
              case 2: r = (int32_t)((uint32_t)a + (uint32_t)b); break;
              case 3:
                if (b >= 0) r = b >= 32 ? (a < 0 ? -1 : 0) : a >> b;
                else r = b <= -32 ? 0 : (int32_t)((uint32_t)a << (-b));
                break;
              default: r = (int32_t)((uint32_t)a * (uint32_t)b); break;
            }
            acc[k] = r;
          }
        }
      }
  if (opcode == OP_GEMM && !reset) m->s->gemm_busy += *cycles;
  if (opcode == OP_ALU) m->s->alu_busy += *cycles;
  return 0;
}

/* ---- queues and tokens --------------------------------------------------------------------- */
enum { Q_LOAD, Q_COMPUTE, Q_STORE };
enum { T_L2G, T_G2L, T_G2S, T_S2G }; /* load->compute, compute->load, compute->store, store->compute */

typedef struct { uint64_t *ts; int64_t head, tail; } fifo;

static const char *OPNAME[5] = {"LOAD", "STORE", "GEMM", "FINISH", "ALU"};

int vta_run(const vta_cfg *cfg, const uint8_t *insns, int64_t count, uint8_t *dram, int64_t dram_bytes,
            vta_stats *stats) {
  machine mm, *m = &mm;
  memset(m, 0, sizeof mm);
  memset(stats, 0, sizeof *stats);
  stats->error_index = -1;
  m->c = *cfg;
  m->s = stats;
  make_layout(cfg, &m->l);
  m->batch = 1 << cfg->log_batch;
  m->block = 1 << cfg->log_block;
  m->uop_depth = 1LL << cfg->log_uop_depth;
  m->inp_depth = 1LL << cfg->log_inp_depth;
  m->wgt_depth = 1LL << cfg->log_wgt_depth;
  m->acc_depth = 1LL << cfg->log_acc_depth;
  m->inp_elem = m->batch * m->block;
  m->wgt_elem = m->block * m->block;
  m->acc_elem = 4 * m->batch * m->block;
  m->out_elem = m->batch * m->block;
  m->dram = dram;
  m->dram_bytes = dram_bytes;
  m->uop = calloc(m->uop_depth, 4);
  m->inp = calloc(m->inp_depth, m->inp_elem);
  m->wgt = calloc(m->wgt_depth, m->wgt_elem);
  m->acc = calloc(m->acc_depth, m->acc_elem);
  int64_t *q[3];
  int64_t qn[3] = {0, 0, 0}, qpos[3] = {0, 0, 0};
  fifo tok[4];
  uint64_t clock[3] = {0, 0, 0};
  int rc = 0;
  for (int i = 0; i < 3; ++i) q[i] = malloc((count + 1) * sizeof(int64_t));
  for (int i = 0; i < 4; ++i) { tok[i].ts = malloc((count + 1) * sizeof(uint64_t)); tok[i].head = tok[i].tail = 0; }
  if (!m->uop || !m->inp || !m->wgt || !m->acc) { rc = fail(m, -1, "out of memory"); goto done; }
  /* fetch: dispatch to the queues in program order */
  for (int64_t i = 0; i < count; ++i) {
    uint64_t w[2];
    memcpy(w, insns + 16 * i, 16);
    int op = (int)get(w, m->l.opcode);
    int qi;
    if (op == OP_LOAD) {
      int type = (int)get(w, m->l.mem[0]);
      if (type > MEM_ACC) { char msg[80]; snprintf(msg, sizeof msg, "LOAD into memory type %d", type);
                            rc = fail(m, i, msg); goto done; }
      qi = (type == MEM_INP || type == MEM_WGT) ? Q_LOAD : Q_COMPUTE;
    } else if (op == OP_STORE) qi = Q_STORE;
    else if (op == OP_GEMM || op == OP_ALU || op == OP_FINISH) qi = Q_COMPUTE;
    else { char msg[80]; snprintf(msg, sizeof msg, "unknown opcode %d", op); rc = fail(m, i, msg); goto done; }
    int pp = (int)get(w, m->l.pop_prev), pn = (int)get(w, m->l.pop_next);
    int up = (int)get(w, m->l.push_prev), un = (int)get(w, m->l.push_next);
    if ((qi == Q_LOAD && (pp || up)) || (qi == Q_STORE && (pn || un))) {
      rc = fail(m, i, qi == Q_LOAD ? "load-stage instruction pops/pushes a token of a previous stage (there is none)"
                                   : "store-stage instruction pops/pushes a token of a next stage (there is none)");
      goto done;
    }
    q[qi][qn[qi]++] = i;
  }
  for (;;) {
    int best = -1;
    uint64_t best_start = 0;
    int done_all = 1;
    for (int qi = 0; qi < 3; ++qi) {
      if (qpos[qi] >= qn[qi]) continue;
      done_all = 0;
      uint64_t w[2];
      memcpy(w, insns + 16 * q[qi][qpos[qi]], 16);
      int pp = (int)get(w, m->l.pop_prev), pn = (int)get(w, m->l.pop_next);
      int tp = qi == Q_COMPUTE ? T_L2G : T_G2S;      /* token popped with pop_prev */
      int tn = qi == Q_LOAD ? T_G2L : T_S2G;         /* token popped with pop_next */
      uint64_t start = clock[qi];
      if (pp) { if (tok[tp].head == tok[tp].tail) continue; if (tok[tp].ts[tok[tp].head] > start) start = tok[tp].ts[tok[tp].head]; }
      if (pn) { if (tok[tn].head == tok[tn].tail) continue; if (tok[tn].ts[tok[tn].head] > start) start = tok[tn].ts[tok[tn].head]; }
      if (best < 0 || start < best_start) { best = qi; best_start = start; }
    }
    if (done_all) break;
    if (best < 0) {
      int64_t first = count;
      for (int qi = 0; qi < 3; ++qi) if (qpos[qi] < qn[qi] && q[qi][qpos[qi]] < first) first = q[qi][qpos[qi]];
      uint64_t w[2];
      memcpy(w, insns + 16 * first, 16);
      char msg[160];
      snprintf(msg, sizeof msg, "deadlock: %s waits for a dependency token that is never pushed",
               OPNAME[get(w, m->l.opcode)]);
      rc = fail(m, first, msg);
      goto done;
    }
    int qi = best;
    int64_t idx = q[qi][qpos[qi]++];
    uint64_t w[2];
    memcpy(w, insns + 16 * idx, 16);
    int op = (int)get(w, m->l.opcode);
    int pp = (int)get(w, m->l.pop_prev), pn = (int)get(w, m->l.pop_next);
    int up = (int)get(w, m->l.push_prev), un = (int)get(w, m->l.push_next);
    if (pp) tok[qi == Q_COMPUTE ? T_L2G : T_G2S].head++;
    if (pn) tok[qi == Q_LOAD ? T_G2L : T_S2G].head++;
    uint64_t cycles = 1;
    if (op == OP_LOAD || op == OP_STORE) {
      mem_insn o;
      decode_mem(m, w, &o);
      rc = op == OP_LOAD ? run_load(m, idx, &o, &cycles) : run_store(m, idx, &o, &cycles);
    } else if (op == OP_GEMM || op == OP_ALU) {
      rc = run_gemm_alu(m, idx, w, op, &cycles);
    } else {
      stats->finish_count++;
    }
    if (rc) goto done;
    clock[qi] = best_start + cycles;
    if (qi == Q_LOAD) stats->load_busy += cycles;
    else if (qi == Q_COMPUTE) stats->compute_busy += cycles;
    else stats->store_busy += cycles;
    /* push_prev: load has none; compute -> load (G2L); store -> compute (S2G)
       push_next: load -> compute (L2G); compute -> store (G2S) */
    if (up) { fifo *t = &tok[qi == Q_COMPUTE ? T_G2L : T_S2G]; t->ts[t->tail++] = clock[qi]; }
    if (un) { fifo *t = &tok[qi == Q_LOAD ? T_L2G : T_G2S]; t->ts[t->tail++] = clock[qi]; }
  }
  if (stats->finish_count == 0) { rc = fail(m, count - 1, "the stream has no FINISH instruction"); goto done; }
  for (int i = 0; i < 4; ++i)
    if (tok[i].head != tok[i].tail) {
      static const char *names[4] = {"load->compute", "compute->load", "compute->store", "store->compute"};
      char msg[120];
      snprintf(msg, sizeof msg, "%lld %s dependency token(s) left unpopped at the end of the stream",
               (long long)(tok[i].tail - tok[i].head), names[i]);
      rc = fail(m, count - 1, msg);
      goto done;
    }
  stats->cycles = clock[0] > clock[1] ? clock[0] : clock[1];
  if (clock[2] > stats->cycles) stats->cycles = clock[2];
done:
  for (int i = 0; i < 3; ++i) free(q[i]);
  for (int i = 0; i < 4; ++i) free(tok[i].ts);
  free(m->uop); free(m->inp); free(m->wgt); free(m->acc);
  return rc;
}
