/*
 * probe_overhead_reader: N threads issue 4 KiB pread()s at random page-aligned
 * offsets of one file for a fixed time and print the total IOPS, then the
 * reads per CPU second the readers used (user + system, getrusage): the
 * latter leaves out time other tasks took the CPU from the readers. Used by
 * tools/bench/probe_overhead.sh (which compiles it; a .c file, so the
 * Makefile glob of tools/bench .cc files leaves it out of hotshard-readbench).
 *
 *   probe_overhead_reader FILE SECONDS THREADS [BLOCK_BYTES]
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *path;
static double seconds;
static size_t block = 4096;
static uint64_t blocks;
static volatile int stop;

struct worker {
	pthread_t thread;
	uint64_t ops;
	uint64_t seed;
};

static void *run(void *arg)
{
	struct worker *w = arg;
	char *buf = aligned_alloc(4096, block);
	int fd = open(path, O_RDONLY);
	uint64_t x = w->seed | 1;

	if (fd < 0 || !buf) {
		perror(path);
		exit(1);
	}
	while (!stop) {
		for (int i = 0; i < 64; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			if (pread(fd, buf, block, (off_t)(x % blocks) * block) != (ssize_t)block) {
				perror("pread");
				exit(1);
			}
		}
		w->ops += 64;
	}
	close(fd);
	free(buf);
	return NULL;
}

static double seconds_of(const struct timeval *tv)
{
	return tv->tv_sec + tv->tv_usec / 1e6;
}

int main(int argc, char **argv)
{
	struct stat st;
	int threads;

	if (argc < 4) {
		fprintf(stderr, "usage: %s FILE SECONDS THREADS [BLOCK_BYTES]\n", argv[0]);
		return 2;
	}
	path = argv[1];
	seconds = atof(argv[2]);
	threads = atoi(argv[3]);
	if (argc > 4)
		block = strtoul(argv[4], NULL, 0);
	if (stat(path, &st) != 0 || st.st_size < (off_t)block) {
		perror(path);
		return 1;
	}
	blocks = st.st_size / block;

	struct worker *w = calloc(threads, sizeof(*w));
	for (int i = 0; i < threads; i++) {
		w[i].seed = 0x9e3779b97f4a7c15ull * (i + 1);
		pthread_create(&w[i].thread, NULL, run, &w[i]);
	}
	struct timespec t0, t1;
	struct rusage r0, r1;
	getrusage(RUSAGE_SELF, &r0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	usleep((useconds_t)(seconds * 1e6));
	stop = 1;
	uint64_t ops = 0;
	for (int i = 0; i < threads; i++) {
		pthread_join(w[i].thread, NULL);
		ops += w[i].ops;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	getrusage(RUSAGE_SELF, &r1);
	double elapsed = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	double cpu = seconds_of(&r1.ru_utime) + seconds_of(&r1.ru_stime) - seconds_of(&r0.ru_utime) -
		     seconds_of(&r0.ru_stime);
	printf("%.0f %.0f\n", ops / elapsed, cpu > 0 ? ops / cpu : 0);
	return 0;
}
