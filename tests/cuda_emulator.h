// CPU emulation of the small part of CUDA's execution model that tinysr's kernels use, so the
// real kernels/*.cu sources can be compiled by g++ and run in CI where no GPU exists.
// Used only by tests/cupy_emulator.py, which force-includes this header (g++ -include).
//
// Model: a launch runs its blocks one after another, in blockIdx order (x fastest). The
// blockDim.x * blockDim.y * blockDim.z threads of a block are fibers (user-mode stacks switched
// by a few lines of x86-64 assembly) on one OS thread: each runs, in a shuffled order, until it
// reaches __syncthreads() or returns; when every thread of the block waits at the barrier, all
// are released into the next phase. So a missing __syncthreads() makes threads read shared
// memory that others have not written yet (or have already overwritten), reliably, instead of
// by the chance of real concurrency.
// __shared__ becomes `static`: one copy per kernel instantiation, which is exactly per-block
// shared memory since blocks never overlap.
//
// Vector types: float2, float4 and double2 (aligned as in CUDA), for reinterpret_cast loads.
// Not emulated: warps and warp intrinsics, atomics, dynamic shared memory, streams, timing.
// A block whose threads do not all reach the same __syncthreads() (some return while others
// wait: undefined behaviour on a GPU) aborts with a message. x86-64 System V only.

#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#if !defined(__x86_64__)
#error "tests/cuda_emulator.h switches fibers with x86-64 assembly"
#endif

struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x, y, z; };

// CUDA's vector types used by the kernels' 16-byte shared-memory loads, with CUDA's alignment.
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };

// cuda_emu_switch(save, load): push the callee-saved registers, store rsp in *save, load rsp
// from `load`, pop that fiber's registers and return into it.
extern "C" void cuda_emu_switch(void** save, void* load);
asm(R"(
    .text
    .globl cuda_emu_switch
    .hidden cuda_emu_switch
    .type cuda_emu_switch, @function
cuda_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cuda_emu_switch, .-cuda_emu_switch
)");

namespace cuda_emu {
inline uint3 thread_idx{0, 0, 0};
inline uint3 block_idx{0, 0, 0};
inline dim3 grid_dim{1, 1, 1};
inline dim3 block_dim{1, 1, 1};

constexpr std::size_t kStackBytes = 256 * 1024;

struct Fiber {
    void* sp = nullptr;
    bool done = false;
    std::unique_ptr<char[]> stack{new char[kStackBytes]};
};

inline void* scheduler_sp = nullptr;
inline Fiber* current = nullptr;
inline const std::function<void()>* body = nullptr;

[[noreturn]] inline void fiber_main()
{
    (*body)();
    current->done = true;
    cuda_emu_switch(&current->sp, scheduler_sp);
    std::abort();  // a finished fiber is never resumed
}

// A fresh stack whose first switch-in "returns" into fiber_main with the ABI's alignment.
inline void start(Fiber& f)
{
    auto top = reinterpret_cast<std::uintptr_t>(f.stack.get() + kStackBytes) & ~std::uintptr_t(15);
    auto* slot = reinterpret_cast<void**>(top);
    *--slot = nullptr;                                        // fiber_main's (unused) return address
    *--slot = reinterpret_cast<void*>(&fiber_main);           // popped by cuda_emu_switch's ret
    for (int r = 0; r < 6; ++r) *--slot = nullptr;            // rbp rbx r12 r13 r14 r15
    f.sp = slot;
    f.done = false;
}

// The threads of a phase run in a fresh pseudo-random order each phase (xorshift64, seeded
// once per process, so runs repeat exactly): a kernel that needs a barrier it lacks sees data
// from "later" and "earlier" threads alike, as a GPU may give it.
inline std::uint64_t rng_state = 0x9E3779B97F4A7C15ull;

inline void shuffle(std::vector<unsigned>& order)
{
    for (std::size_t i = order.size(); i > 1; --i) {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        std::swap(order[i - 1], order[rng_state % i]);
    }
}

inline void yield_to_scheduler() { cuda_emu_switch(&current->sp, scheduler_sp); }

// Run fn() once per (block, thread) of a grid x block launch.
inline void launch(dim3 grid, dim3 block, const std::function<void()>& fn)
{
    const unsigned threads = block.x * block.y * block.z;
    grid_dim = grid;
    block_dim = block;
    body = &fn;
    std::vector<Fiber> fibers(threads);
    std::vector<unsigned> order(threads);
    for (unsigned t = 0; t < threads; ++t) order[t] = t;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                block_idx = {x, y, z};
                for (auto& f : fibers) start(f);
                for (;;) {  // one phase: every live thread runs to its next barrier or its end
                    shuffle(order);
                    unsigned waiting = 0, finished = 0;
                    for (unsigned t : order) {
                        Fiber& f = fibers[t];
                        if (f.done) continue;
                        current = &f;
                        thread_idx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                        cuda_emu_switch(&scheduler_sp, f.sp);
                        (f.done ? finished : waiting) += 1;
                    }
                    if (waiting == 0) break;
                    if (finished != 0) {
                        std::fprintf(stderr, "cuda_emulator: block (%u,%u,%u): %u threads returned while %u "
                                     "wait at __syncthreads()\n", x, y, z, finished, waiting);
                        std::abort();
                    }
                }
            }
    body = nullptr;
}
}  // namespace cuda_emu

#define threadIdx (cuda_emu::thread_idx)
#define blockIdx (cuda_emu::block_idx)
#define gridDim (cuda_emu::grid_dim)
#define blockDim (cuda_emu::block_dim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

inline void __syncthreads() { cuda_emu::yield_to_scheduler(); }
