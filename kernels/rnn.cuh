// One time step of the recurrent cells (RNN, LSTM, GRU): everything but the two matrix products,
// forward and backward, generic over T in {float16, float32, float64}; arithmetic in acc_t<T>.
//
// One thread per element (row b, unit j) of the [B, H] state; the caller derives b = i / H and
// j = i % H on the device, while the host loop runs rows x units with j innermost, so the [B, H]
// arrays and each gate block are read at consecutive j and the loop vectorises. Gate blocks sit
// side by side in rows of G*H (LSTM: i, f, g, o; GRU: r, z, n), so gate k of element (b, j) is
// at b * G*H + k*H + j. Gate arrays arrive as raw, C-contiguous [B, G*H] arrays. The functions
// are branch-free (ended rows select, never return early), which vectorisation needs.
//
// Equations (PyTorch's): with xw = W_ih x + b_ih (+ b_hh for RNN and LSTM, folded in by the
// caller) and hw = W_hh h_prev,
//   RNN   h = act(xw + hw)                          act = tanh or relu
//   LSTM  i, f, o = sigmoid(.), g = tanh(.);  c = f c_prev + i g;  h = o tanh(c)
//         (tanh itself, never 2 sigmoid(2x) - 1: that form loses all relative accuracy near 0,
//         where a small cell state lives; 7% error at x = 1e-6 in float32)
//   GRU   r, z = sigmoid(xw + hw + b_hh);  hn = hw_n + b_hn;  n = tanh(xw_n + r hn);
//         h = (1 - z) n + z h_prev
// Saved for backward (written by the forward): LSTM the activations i, f, g, o (in place over
// the pre-activations) and tanh(c); GRU the activations r, z, n and hn. The RNN backward needs
// only h.
//
// Variable lengths: row b is valid at step t when t < lengths[b]. An invalid step carries the
// state unchanged (h = h_prev, c = c_prev), so a forward pass ends at the last valid step and a
// reverse pass starts there from the initial state. Its backward passes the state gradient
// through and writes zero gate gradients.
//
// Backward, per step: dh_rec = dgates_{next} @ W_hh (the caller's product) and dh, an in/out
// term: on entry the part of dL/dh_t that does not go through dh_rec (the final-state gradient
// at the first backward step, a carried gradient, GRU's z * dh), on exit that part for h_prev.
// dc (LSTM) is in/out too: dL/dc_t on entry, dL/dc_prev on exit. dy is the gradient of this
// step's output; it is ignored on invalid steps, whose output is zero.
#ifndef GPUDL_RNN_CUH
#define GPUDL_RNN_CUH
// Needs common.cuh and activations.cuh first (gpudl.backend.kernel_specs prepends them).

namespace gpudl {

template <typename Lengths>
__device__ inline bool rnn_step_valid(const Lengths& lengths, long long row, long long t) {
  return t < (long long)lengths[row];
}

template <typename T, typename Lengths>
__device__ inline void rnn_cell_forward(T xw, T hw, T h_prev, const Lengths& lengths, long long t,
                                        long long row, bool use_relu, T& h) {
  typedef acc_t<T> A;
  const A pre = A(xw) + A(hw);
  const A y = use_relu ? relu<A>(pre) : tanh_forward<A>(pre);
  h = rnn_step_valid(lengths, row, t) ? T(y) : h_prev;
}

template <typename T, typename Lengths>
__device__ inline void rnn_cell_backward(T h, T dy, T dh_rec, const Lengths& lengths, long long t,
                                         long long row, bool use_relu, T& dh, T& dpre) {
  typedef acc_t<T> A;
  const bool valid = rnn_step_valid(lengths, row, t);
  const A carry = A(dh_rec) + A(dh);
  const A total = A(dy) + carry;
  const A d = use_relu ? relu_backward<A>(A(h), total) : tanh_backward<A>(A(h), total);
  dpre = valid ? T(d) : T(0);
  dh = valid ? T(0) : T(carry);
}

template <typename T, typename Gates, typename HW, typename Lengths>
__device__ inline void lstm_cell_forward(Gates& gates, const HW& hw, T c_prev, T h_prev,
                                         const Lengths& lengths, long long t, long long row,
                                         long long unit, long long hidden, T& c, T& h, T& tanh_c) {
  typedef acc_t<T> A;
  const long long H = hidden;
  const long long k = row * 4 * H + unit;
  const A ig = sigmoid<A>(A(gates[k]) + A(hw[k]));
  const A fg = sigmoid<A>(A(gates[k + H]) + A(hw[k + H]));
  const A gg = tanh_forward<A>(A(gates[k + 2 * H]) + A(hw[k + 2 * H]));
  const A og = sigmoid<A>(A(gates[k + 3 * H]) + A(hw[k + 3 * H]));
  gates[k] = T(ig);
  gates[k + H] = T(fg);
  gates[k + 2 * H] = T(gg);
  gates[k + 3 * H] = T(og);
  const A c_new = fg * A(c_prev) + ig * gg;
  const A tc = tanh_forward<A>(c_new);
  tanh_c = T(tc);
  const bool valid = rnn_step_valid(lengths, row, t);
  c = valid ? T(c_new) : c_prev;
  h = valid ? T(og * tc) : h_prev;
}

template <typename T, typename Act, typename DGates, typename Lengths>
__device__ inline void lstm_cell_backward(const Act& act, T c_prev, T tanh_c, T dy, T dh_rec,
                                          const Lengths& lengths, long long t, long long row,
                                          long long unit, long long hidden, T& dh, T& dc,
                                          DGates& dgates) {
  typedef acc_t<T> A;
  const long long H = hidden;
  const long long k = row * 4 * H + unit;
  const bool valid = rnn_step_valid(lengths, row, t);
  const A carry = A(dh_rec) + A(dh);
  const A total = A(dy) + carry;
  const A ig = act[k], fg = act[k + H], gg = act[k + 2 * H], og = act[k + 3 * H];
  const A tc = tanh_c;
  const A dcc = A(dc) + tanh_backward<A>(tc, total * og);
  const A zero = A(0);
  dgates[k] = T(valid ? sigmoid_backward<A>(ig, dcc * gg) : zero);
  dgates[k + H] = T(valid ? sigmoid_backward<A>(fg, dcc * A(c_prev)) : zero);
  dgates[k + 2 * H] = T(valid ? tanh_backward<A>(gg, dcc * ig) : zero);
  dgates[k + 3 * H] = T(valid ? sigmoid_backward<A>(og, total * tc) : zero);
  dc = valid ? T(dcc * fg) : dc;
  dh = valid ? T(0) : T(carry);
}

template <typename T, typename XW, typename HW, typename Bias, typename Act, typename Lengths>
__device__ inline void gru_cell_forward(const XW& xw, const HW& hw, const Bias& bias_hh,
                                        T h_prev, const Lengths& lengths, long long t,
                                        long long row, long long unit, long long hidden, Act& act,
                                        T& h) {
  typedef acc_t<T> A;
  const long long H = hidden;
  const long long j = unit;
  const long long k = row * 3 * H + j;
  const long long a = row * 4 * H + j;
  const A rg = sigmoid<A>(A(xw[k]) + (A(hw[k]) + A(bias_hh[j])));
  const A zg = sigmoid<A>(A(xw[k + H]) + (A(hw[k + H]) + A(bias_hh[j + H])));
  const A hn = A(hw[k + 2 * H]) + A(bias_hh[j + 2 * H]);
  const A ng = tanh_forward<A>(A(xw[k + 2 * H]) + rg * hn);
  act[a] = T(rg);
  act[a + H] = T(zg);
  act[a + 2 * H] = T(ng);
  act[a + 3 * H] = T(hn);
  const A h_new = (A(1) - zg) * ng + zg * A(h_prev);
  h = rnn_step_valid(lengths, row, t) ? T(h_new) : h_prev;
}

template <typename T, typename Act, typename DGates, typename Lengths>
__device__ inline void gru_cell_backward(const Act& act, T h_prev, T dy, T dh_rec,
                                         const Lengths& lengths, long long t, long long row,
                                         long long unit, long long hidden, T& dh, DGates& dgx,
                                         DGates& dgh) {
  typedef acc_t<T> A;
  const long long H = hidden;
  const long long k = row * 3 * H + unit;
  const long long a = row * 4 * H + unit;
  const bool valid = rnn_step_valid(lengths, row, t);
  const A carry = A(dh_rec) + A(dh);
  const A total = A(dy) + carry;
  const A rg = act[a], zg = act[a + H], ng = act[a + 2 * H], hn = act[a + 3 * H];
  const A zero = A(0);
  const A dn = valid ? tanh_backward<A>(ng, total * (A(1) - zg)) : zero;
  const A dz = valid ? sigmoid_backward<A>(zg, total * (A(h_prev) - ng)) : zero;
  const A dr = valid ? sigmoid_backward<A>(rg, dn * hn) : zero;
  dgx[k] = T(dr);
  dgx[k + H] = T(dz);
  dgx[k + 2 * H] = T(dn);
  dgh[k] = T(dr);
  dgh[k + H] = T(dz);
  dgh[k + 2 * H] = T(valid ? dn * rg : zero);  // 0, not 0 * a NaN activation, on ended rows
  dh = T(valid ? total * zg : carry);
}

}  // namespace gpudl

#endif  // GPUDL_RNN_CUH
