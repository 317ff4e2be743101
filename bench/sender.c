/* Bounded, rate-limited UDP sender for bench/live.py: COUNT datagrams of SIZE payload bytes to
 * 127.0.0.1:PORT at RATE packets/s, in sendmmsg batches of 32, paced against CLOCK_MONOTONIC.
 * A socket bound to the port (never read) absorbs the datagrams, so no ICMP errors are made.
 *
 *   sender PORT RATE COUNT SIZE [inject]      prints "sent N in S s" on stdout
 *
 * "inject" writes the same Ethernet/IPv4/UDP frames straight onto lo through a packet socket
 * (root): the kernel's UDP and IP transmit path is skipped, so one core sends faster.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* An Ethernet/IPv4/UDP frame 127.0.0.1:40000 -> 127.0.0.1:port with `size` payload bytes, IP
 * checksum set, UDP checksum 0 (none); returns its length. */
static int frame(char *buf, int port, int size) {
    unsigned char *f = (unsigned char *)buf;
    memset(f, 0, 14);
    f[0] = 0x02;          /* not lo's address: the IP layer drops the frame at once (the taps see it) */
    f[12] = 0x08;
    unsigned char *ip = f + 14;
    int total = 20 + 8 + size;
    unsigned char hdr[20] = {0x45, 0, total >> 8, total & 0xff, 0, 1, 0, 0, 64, 17, 0, 0,
                             127, 0, 0, 1, 127, 0, 0, 1};
    unsigned sum = 0;
    for (int i = 0; i < 20; i += 2) sum += hdr[i] << 8 | hdr[i + 1];
    sum = (sum & 0xffff) + (sum >> 16);
    sum = ~((sum & 0xffff) + (sum >> 16)) & 0xffff;
    hdr[10] = sum >> 8;
    hdr[11] = sum & 0xff;
    memcpy(ip, hdr, 20);
    unsigned char udp[8] = {40000 >> 8, 40000 & 0xff, port >> 8, port & 0xff, (8 + size) >> 8, (8 + size) & 0xff, 0, 0};
    memcpy(ip + 20, udp, 8);
    memset(ip + 28, 'x', size);
    return 14 + total;
}

int main(int argc, char **argv) {
    if (argc != 5 && !(argc == 6 && strcmp(argv[5], "inject") == 0)) {
        fprintf(stderr, "usage: sender PORT RATE COUNT SIZE [inject]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    double rate = atof(argv[2]);
    long count = atol(argv[3]);
    int size = atoi(argv[4]);
    if (port <= 0 || port > 65535 || rate <= 0 || count <= 0 || size < 0 || size > 1400) {
        fprintf(stderr, "sender: bad arguments\n");
        return 2;
    }
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
    int sink = socket(AF_INET, SOCK_DGRAM, 0);
    int rcv = 4096;
    setsockopt(sink, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    if (bind(sink, (struct sockaddr *)&dst, sizeof dst) < 0) {
        perror("sender: bind");
        return 1;
    }
    char payload[1500];
    memset(payload, 'x', sizeof payload);
    int s, len = size;
    if (argc == 6) {
        s = socket(AF_PACKET, SOCK_RAW, 0);
        struct sockaddr_ll to = {.sll_family = AF_PACKET, .sll_ifindex = if_nametoindex("lo")};
        if (s < 0 || bind(s, (struct sockaddr *)&to, sizeof to) < 0) {
            perror("sender: packet socket on lo");
            return 1;
        }
        len = frame(payload, port, size);
    } else {
        s = socket(AF_INET, SOCK_DGRAM, 0);
        if (connect(s, (struct sockaddr *)&dst, sizeof dst) < 0) {
            perror("sender: connect");
            return 1;
        }
    }
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = payload;
        iov[i].iov_len = len;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    double start = now();
    long sent = 0;
    while (sent < count) {
        /* pace: the next batch may leave once its first packet's scheduled time has come */
        double due = start + sent / rate;
        double wait = due - now();
        if (wait > 0) {
            struct timespec t = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
            nanosleep(&t, NULL);
        }
        int n = count - sent < BATCH ? (int)(count - sent) : BATCH;
        int r = sendmmsg(s, msgs, n, 0);
        if (r < 0) {
            perror("sender: sendmmsg");
            return 1;
        }
        sent += r;
    }
    printf("sent %ld in %.3f s\n", sent, now() - start);
    return 0;
}
