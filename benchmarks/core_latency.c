/* Two probes of the machine under a benchmark, called from core_latency.py through ctypes.
 *
 * round_trip_ns: a cache line passed back and forth between two threads pinned to two CPUs. Its latency says
 * where the hypervisor placed the two vCPUs: about 50 ns when they share a last-level cache, several times more
 * when they do not, and every OpenMP barrier and every tensor one thread writes and the other reads pays it.
 * chain_rate: a dependent multiply-add chain on one CPU; its rate follows that core's clock. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

double chain_rate(int cpu, long iters) {
    cpu_set_t old;
    pthread_getaffinity_np(pthread_self(), sizeof old, &old);
    pin(cpu);
    volatile uint64_t sink = 12345;
    uint64_t x = sink;
    double t0 = now();
    for (long i = 0; i < iters; i++) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    double seconds = now() - t0;
    sink = x;  /* keeps the chain from being optimised away */
    pthread_setaffinity_np(pthread_self(), sizeof old, &old);
    return iters / seconds;
}

struct pong { _Atomic long *turn; long rounds; int cpu; };

static void *answer(void *arg) {
    /* Copied once: read through `arg` after every acquire, they would pull the caller's stack line across too. */
    _Atomic long *turn = ((struct pong *)arg)->turn;
    long rounds = ((struct pong *)arg)->rounds;
    pin(((struct pong *)arg)->cpu);
    atomic_store_explicit(turn, 0, memory_order_release);  /* ready: on its CPU */
    for (long i = 0; i < rounds; i++) {
        while (atomic_load_explicit(turn, memory_order_acquire) != 2 * i + 1) {}
        atomic_store_explicit(turn, 2 * i + 2, memory_order_release);
    }
    return 0;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median over batches of `batch` round trips, so that a batch in which the hypervisor paused either vCPU
 * does not count. */
double round_trip_ns(int cpu_a, int cpu_b, int batches, int batch) {
    /* The line passed back and forth, alone in its 64 bytes: a neighbour on the same line (a local of either
     * thread) would add its own traffic. Static, so one probe at a time per process (core_latency.py locks). */
    static struct { _Alignas(64) _Atomic long value; char pad[56]; } line;
    _Atomic long *turn = &line.value;
    struct pong p = {turn, (long)batches * batch, cpu_b};
    double times[batches];
    cpu_set_t old;
    pthread_t other;
    atomic_store(turn, -1);
    pthread_getaffinity_np(pthread_self(), sizeof old, &old);
    if (pthread_create(&other, 0, answer, &p)) return -1.0;
    pin(cpu_a);
    while (atomic_load_explicit(turn, memory_order_acquire) != 0) {}  /* time only once both are in place */
    for (int k = 0; k < batches; k++) {
        double t0 = now();
        for (long i = (long)k * batch; i < (long)(k + 1) * batch; i++) {
            atomic_store_explicit(turn, 2 * i + 1, memory_order_release);
            while (atomic_load_explicit(turn, memory_order_acquire) != 2 * i + 2) {}
        }
        times[k] = (now() - t0) / batch * 1e9;
    }
    pthread_join(other, 0);
    pthread_setaffinity_np(pthread_self(), sizeof old, &old);
    qsort(times, batches, sizeof times[0], by_value);
    return times[batches / 2];
}
