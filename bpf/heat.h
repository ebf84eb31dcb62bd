/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * heat.h: the one header shared by the heat probes (bpf/heat.bpf.c) and their
 * loader (bpf/heat_probes.cc). Fixed-width fields only, no pointers; the
 * loader pins every layout with static_assert(sizeof ...).
 *
 * Units are kernel pages (PAGE_SIZE of the running kernel) and kernel dev_t
 * encoding (major << 20 | minor); the loader converts both, in one place each.
 */
#ifndef HOTSHARD_BPF_HEAT_H
#define HOTSHARD_BPF_HEAT_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Sizes of the in-kernel maps (the loader may override the chunk map's). */
#define HEAT_CHUNK_ENTRIES 65536
#define HEAT_CGROUP_ENTRIES 1024
/* Files whose reads count toward the per-cgroup totals (with cgroup_files_only). */
#define HEAT_FILE_ENTRIES 262144
/* File systems the filter can hold. */
#define HEAT_MAX_DEVICES 16
/* A read whose page range spans more chunks than this counts the rest as lost. */
#define HEAT_MAX_CHUNK_SPLIT 64
/* Slots of each CPU's chunk cache: 1 << HEAT_CHUNK_CACHE_BITS. */
#define HEAT_CHUNK_CACHE_BITS 6
#define HEAT_CHUNK_CACHE_SLOTS (1 << HEAT_CHUNK_CACHE_BITS)

/* Key of the per-chunk counters: one file's chunk on one device. */
struct heat_key {
	__u32 dev; /* kernel encoding: major << 20 | minor */
	__u32 pad;
	__u64 ino;
	__u64 chunk; /* page index >> chunk_page_shift */
};

/* Key of the served-files set: one backing file the mount opened. */
struct heat_file_key {
	__u32 dev; /* kernel encoding */
	__u32 pad;
	__u64 ino;
};

/* Per-chunk counters, accumulated since the loader last drained the key. */
struct heat_val {
	__u64 pages_requested; /* buffered reads (get_pages) + mmap (map_pages, faults) */
	__u64 pages_missed;    /* pages inserted into the page cache (incl. readahead) */
	__u64 mmap_faults;     /* filemap_fault calls: mmap accesses not served by fault-around */
	__u64 first_ns;	       /* bpf_ktime_get_ns() of the first event since the last drain */
	__u64 last_ns;	       /* ... and of the latest one (both at tick precision) */
};

/*
 * One slot of a CPU's chunk cache: the counters of one chunk that this CPU's
 * events added since the slot was taken, not yet in the chunk map. Events of
 * a chunk already in its slot add here with plain stores (no hash lookup, no
 * atomic, no shared cache line); an event of another chunk that maps to the
 * same slot first adds the slot into the chunk map. The loader adds what the
 * retired set's slots hold when it drains. A slot whose three counters are 0
 * is empty. One cache line each.
 */
struct heat_chunk_slot {
	struct heat_key key;
	__u64 pages_requested;
	__u64 pages_missed;
	__u64 mmap_faults;
	__u64 first_ns;
	__u64 last_ns;
};

/* A CPU's chunk cache, direct-mapped by a hash of the key. */
struct heat_chunk_cache {
	struct heat_chunk_slot slots[HEAT_CHUNK_CACHE_SLOTS];
};

/* Per-cgroup totals (per-CPU values: no shared cache line on the hot path). */
struct heat_cgroup_val {
	__u64 pages_requested;
	__u64 pages_missed;
};

/*
 * Per-CPU pending per-cgroup counts, one slot per counter set: the cgroup of
 * the CPU's latest events and what they read since. Events of the same cgroup
 * add here (a per-CPU array: no hash lookup on the hot path); an event of
 * another cgroup first adds the slot into cgroupsN. The loader adds what is
 * left in the retired set's slots when it drains.
 */
struct heat_cgroup_pending {
	__u64 cgroup_id; /* 0: empty */
	__u64 pages_requested;
	__u64 pages_missed;
};

/* Per-CPU memo of the latest served_files answer (with cgroup_files_only). */
struct heat_served_memo {
	__u64 ino;
	__u32 dev;
	__u32 served;
	__u64 gen; /* served_gen when it was looked up */
};

enum heat_event_kind {
	HEAT_EV_READ = 1,  /* mm_filemap_get_pages */
	HEAT_EV_MISS = 2,  /* mm_filemap_add_to_page_cache */
	HEAT_EV_FAULT = 3, /* mm_filemap_fault */
	HEAT_EV_MAP = 4,   /* mm_filemap_map_pages */
};

/* A sampled raw event, sent through the ring buffer for trace recording only. */
struct heat_sample {
	__u64 ino;
	__u64 index; /* first page */
	__u64 cgroup_id;
	__u64 ts_ns; /* bpf_ktime_get_ns(), at tick precision */
	__u32 dev;   /* kernel encoding */
	__u32 nr_pages;
	__u32 kind; /* enum heat_event_kind */
	__u32 pad;
};

/* Slots of the per-CPU statistics array. */
enum heat_stat {
	HEAT_STAT_EVENTS = 0,	   /* events on watched devices */
	HEAT_STAT_INSERTS,	   /* chunk keys created */
	HEAT_STAT_LOST,		   /* updates dropped: map insert failed, or split too wide */
	HEAT_STAT_CG_LOST,	   /* cgroup updates dropped */
	HEAT_STAT_CONTINUED,	   /* get_pages calls recognised as the rest of one read */
	HEAT_STAT_SAMPLES_DROPPED, /* ring buffer full */
	HEAT_STAT_NR,
};

#endif /* HOTSHARD_BPF_HEAT_H */
