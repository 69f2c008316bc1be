/* rtp_callgen: both ends of N relayed G.711 calls, for bench/rtp_relay.py --calls.
 *
 *   rtp_callgen N SECONDS SIZE PORTS_FILE TICK_US
 *
 * Binds two UDP sockets on 127.0.0.1 (side A, the callers; side B, the callees), prints
 * {"a": PORT, "b": PORT} and waits for a line on stdin ("go": the relay is up and its CPU
 * counter read). Then reads PORTS_FILE (one "A_PORT B_PORT" line per call: the relay's RTP
 * port facing each side) and, for SECONDS, sends every call's two streams at 50 packets/s each
 * (20 ms G.711, SIZE bytes): stream 2i from socket A to call i's A port, stream 2i+1 from socket
 * B to its B port, the 2N streams' packets spread evenly over each 20 ms and sent once per tick
 * of TICK_US. The relay sends them on to the other side (symmetric RTP: back to the socket they
 * came from), where they are received, also once per tick. Each packet carries its send time
 * (CLOCK_MONOTONIC, ns) after the RTP header, so the receiver measures the delay the relay
 * added, plus up to one tick of this loop's own. After SECONDS it drains for 0.5 s and prints
 * one JSON line: sent, received, lost, delay percentiles, and how late the sender ran behind
 * its ticks (if that is high, the generator or a neighbour on its core is the bottleneck).
 *
 * One process does both sides on purpose: one core (CPU0 in the benchmark) for the load, the
 * other for the relay. Loopback only: both sockets bind 127.0.0.1 and send only to it.
 * Bounded: N <= 5000, SECONDS <= 60, waits at most 120 s for "go".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define PTIME_NS 20000000LL          /* 20 ms per packet per stream */
#define BUCKET_NS 10000LL            /* delay histogram: 10 us buckets... */
#define NBUCKETS 20000               /* ...up to 200 ms, then one overflow bucket */
#define MAX_CALLS 5000

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int bind_loopback(void) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    int buf = 8 << 20;
    /* FORCE variants need CAP_NET_ADMIN; the plain ones are capped at rmem_max/wmem_max. */
    if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf) < 0)
        setsockopt(s, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    if (setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf) < 0)
        setsockopt(s, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); exit(1); }
    return s;
}

static int port_of(int s) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &len);
    return ntohs(a.sin_port);
}

static uint64_t hist[NBUCKETS + 1];
static uint64_t received = 0, bad = 0;
static int64_t max_delay = 0;

static void drain(int s, int64_t *recv_time) {
    static unsigned char pkt[BATCH][2048];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    for (;;) {
        memset(msgs, 0, sizeof msgs);
        for (int i = 0; i < BATCH; i++) {
            iov[i].iov_base = pkt[i];
            iov[i].iov_len = sizeof pkt[i];
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int r = recvmmsg(s, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (r <= 0) return;
        int64_t t = now_ns();
        *recv_time = t;
        for (int i = 0; i < r; i++) {
            if (msgs[i].msg_len < 20) { bad++; continue; }
            int64_t sent;
            memcpy(&sent, pkt[i] + 12, sizeof sent);
            int64_t d = t - sent;
            if (d < 0) d = 0;
            if (d > max_delay) max_delay = d;
            int64_t b = d / BUCKET_NS;
            hist[b < NBUCKETS ? b : NBUCKETS]++;
            received++;
        }
        if (r < BATCH) return;
    }
}

static double percentile_us(const uint64_t *h, int n, uint64_t total, double q) {
    if (!total) return -1;
    uint64_t want = (uint64_t)(q * (double)total + 0.5), seen = 0;
    if (want < 1) want = 1;
    for (int i = 0; i <= n; i++) {
        seen += h[i];
        if (seen >= want) return (double)(i + 1) * BUCKET_NS / 1000.0;  /* bucket's upper edge */
    }
    return (double)(n + 1) * BUCKET_NS / 1000.0;
}

static uint64_t late_hist[NBUCKETS + 1];

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: rtp_callgen N SECONDS SIZE PORTS_FILE TICK_US\n");
        return 2;
    }
    int calls = atoi(argv[1]);
    double secs = atof(argv[2]);
    int size = atoi(argv[3]);
    int64_t tick_ns = (int64_t)atoi(argv[5]) * 1000;
    if (calls < 1 || calls > MAX_CALLS || secs <= 0 || secs > 60 || size < 24 || size > 1400
        || tick_ns < 10000 || tick_ns > 20000000) {
        fprintf(stderr, "bounded: 1 <= N <= %d, 0 < SECONDS <= 60, 24 <= SIZE <= 1400, "
                "10 <= TICK_US <= 20000\n", MAX_CALLS);
        return 2;
    }
    int sock[2] = {bind_loopback(), bind_loopback()};
    printf("{\"a\": %d, \"b\": %d}\n", port_of(sock[0]), port_of(sock[1]));
    fflush(stdout);

    struct pollfd in = {0, POLLIN, 0};
    if (poll(&in, 1, 120000) <= 0) { fprintf(stderr, "no go within 120 s\n"); return 1; }
    char line[64];
    if (!fgets(line, sizeof line, stdin) || strncmp(line, "go", 2)) return 1;

    static int ports[MAX_CALLS][2];
    FILE *f = fopen(argv[4], "r");
    if (!f) { perror("ports file"); return 2; }
    int n = 0;
    while (n < calls && fscanf(f, "%d %d", &ports[n][0], &ports[n][1]) == 2) n++;
    fclose(f);
    if (n != calls) { fprintf(stderr, "ports file has %d calls, want %d\n", n, calls); return 2; }

    int streams = 2 * calls;
    static unsigned char pkt[2][BATCH][1500];
    static struct sockaddr_in dst[2][BATCH];
    struct mmsghdr msgs[2][BATCH];
    struct iovec iov[2][BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int side = 0; side < 2; side++)
        for (int i = 0; i < BATCH; i++) {
            memset(pkt[side][i], 0xff, size);             /* PCMU silence */
            pkt[side][i][0] = 0x80; pkt[side][i][1] = 0;  /* RTP v2, PT 0 (RFC 3551) */
            iov[side][i].iov_base = pkt[side][i];
            iov[side][i].iov_len = size;
            dst[side][i].sin_family = AF_INET;
            dst[side][i].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            msgs[side][i].msg_hdr.msg_iov = &iov[side][i];
            msgs[side][i].msg_hdr.msg_iovlen = 1;
            msgs[side][i].msg_hdr.msg_name = &dst[side][i];
            msgs[side][i].msg_hdr.msg_namelen = sizeof dst[side][i];
        }

    /* Packet j (global) is due at t0 + j * interval: stream j % streams, its (j / streams)-th.
     * The loop runs once per tick: it sends every packet due by then (a burst, as a NIC's
     * interrupt coalescing hands a server its packets), drains both sockets, and sleeps to the
     * next tick. It never waits on the sockets, so the relay's sends do not have to wake it
     * (a cross-CPU wake-up per packet costs more than the packet on a VM). */
    double interval = (double)PTIME_NS / streams;
    uint64_t total = (uint64_t)(secs * 1e9 / interval);
    uint64_t next = 0, sent = 0, send_errors = 0;
    int64_t last_recv = 0, max_late = 0;
    int64_t t0 = now_ns() + 1000000;
    for (int64_t tick = t0;; tick += tick_ns) {
        struct timespec until = {tick / 1000000000LL, tick % 1000000000LL};
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL);
        int64_t t = now_ns();
        uint64_t due = (uint64_t)((double)(t - t0) / interval) + 1;
        if (due > total) due = total;
        int fill[2] = {0, 0};
        while (next < due) {
            int stream = (int)(next % (uint64_t)streams), side = stream & 1;
            uint64_t k = next / (uint64_t)streams;
            int i = fill[side]++;
            unsigned char *p = pkt[side][i];
            uint16_t seq = (uint16_t)k;
            uint32_t ts = (uint32_t)(k * 160), ssrc = (uint32_t)stream;
            p[2] = seq >> 8; p[3] = seq & 0xff;
            p[4] = ts >> 24; p[5] = ts >> 16; p[6] = ts >> 8; p[7] = ts;
            p[8] = ssrc >> 24; p[9] = ssrc >> 16; p[10] = ssrc >> 8; p[11] = ssrc;
            memcpy(p + 12, &t, sizeof t);
            dst[side][i].sin_port = htons(ports[stream >> 1][side]);
            /* how far behind its tick the sender is (a tick's own burst is on time) */
            int64_t due_at = t0 + (int64_t)((double)next * interval);
            int64_t late = t - (due_at > tick ? due_at : tick);
            if (late > max_late) max_late = late;
            int64_t b = late / BUCKET_NS;
            late_hist[b < 0 ? 0 : (b < NBUCKETS ? b : NBUCKETS)]++;
            next++;
            if (fill[side] == BATCH || next == due) {
                for (int s = 0; s < 2; s++) {
                    int off = 0;
                    while (off < fill[s]) {
                        int r = sendmmsg(sock[s], msgs[s] + off, fill[s] - off, 0);
                        if (r <= 0) { send_errors += fill[s] - off; break; }
                        off += r;
                        sent += r;
                    }
                    fill[s] = 0;
                }
            }
        }
        drain(sock[0], &last_recv);
        drain(sock[1], &last_recv);
        if (next >= total) break;
    }
    double elapsed = (double)(now_ns() - t0) / 1e9;
    /* drain what is still in flight through the relay, tick by tick as above */
    int64_t end = now_ns() + 500000000LL;
    while (now_ns() < end) {
        struct timespec to = {0, tick_ns};
        nanosleep(&to, NULL);
        drain(sock[0], &last_recv);
        drain(sock[1], &last_recv);
    }
    uint64_t lost = sent > received ? sent - received : 0;
    printf("{\"calls\": %d, \"streams\": %d, \"secs\": %.3f, \"sent\": %llu, "
           "\"send_errors\": %llu, \"received\": %llu, \"bad\": %llu, \"lost\": %llu, "
           "\"send_pps\": %.0f, \"delay_p50_us\": %.0f, \"delay_p99_us\": %.0f, "
           "\"delay_p999_us\": %.0f, \"delay_max_us\": %.0f, \"late_p99_us\": %.0f, "
           "\"late_max_us\": %.0f}\n",
           calls, streams, elapsed, (unsigned long long)sent, (unsigned long long)send_errors,
           (unsigned long long)received, (unsigned long long)bad, (unsigned long long)lost,
           sent / elapsed, percentile_us(hist, NBUCKETS, received, 0.50),
           percentile_us(hist, NBUCKETS, received, 0.99),
           percentile_us(hist, NBUCKETS, received, 0.999), max_delay / 1000.0,
           percentile_us(late_hist, NBUCKETS, sent, 0.99), max_late / 1000.0);
    return 0;
}
