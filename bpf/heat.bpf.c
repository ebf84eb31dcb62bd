// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * heat.bpf.c: per (dev, ino, chunk) read heat from the filemap tracepoints.
 *
 * Every tracepoint has three programs, one per attach kind (tp_btf, raw_tp,
 * classic tracepoint); the loader keeps the best kind the kernel accepts and
 * turns autoload off for the others. All of them decode their arguments into
 * plain numbers and share the accounting below, which runs only for devices
 * listed in watched_devs.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "compat.bpf.h"
#include "heat.h"

#define EEXIST 17

/* Settings, written by the loader through skel->rodata before load. */
const volatile __u32 chunk_page_shift = 12; /* log2(chunk bytes / page bytes): 16 MiB / 4 KiB */
const volatile __u32 page_shift = 12;
const volatile __u32 sample_rate = 0;	  /* 1 in N events to the ring buffer; 0: none */
const volatile bool count_cgroups = true; /* per-cgroup totals (about a third of the cost) */
const volatile __u32 ignore_tgid = 0;	  /* a process whose reads are not heat (the daemon) */
/* Per-cgroup totals count only files in served_files (the mount's backings). */
const volatile bool cgroup_files_only = false;

/*
 * The device filter: kernel dev_t of each watched file system. A global (the
 * skeleton's mmapped .bss) rather than a hash map, so the check on every event
 * costs a few compares instead of a helper call: unwatched file systems then
 * pay nearly nothing. The loader writes the entries, then the count.
 */
__u32 watched_devs[HEAT_MAX_DEVICES];
__u32 nr_watched_devs;

/*
 * Counters come in two sets, [0] and [1] (a chunk map and the CPUs' chunk
 * caches; a cgroup map and the CPUs' pending slots). Programs add to the set that
 * chunk_set (cgroup_set) names; to drain, the loader flips it, waits for an RCU
 * grace period (every program that read the old value has then returned: they
 * run under rcu_read_lock()), and empties the set no one writes any more. No
 * update is lost between a copy and its delete, and no value is reused under
 * a program still holding it.
 */
__u32 chunk_set;
__u32 cgroup_set;
/* Bumped by the loader after every change to served_files: memos go stale. */
__u64 served_gen;

struct chunk_map {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HEAT_CHUNK_ENTRIES);
	__type(key, struct heat_key);
	__type(value, struct heat_val);
} chunks0 SEC(".maps"), chunks1 SEC(".maps");

/*
 * Each CPU's chunk cache in front of the chunk map, one per counter set
 * (index: the set; see struct heat_chunk_slot). A read of a chunk already in
 * its slot then costs a few plain loads and stores instead of a hash lookup
 * and atomic adds on a cache line other CPUs write too. Tracepoints call their
 * programs with preemption disabled (__DO_TRACE, include/linux/tracepoint.h),
 * and these four fire in task context only, so no two events of one CPU
 * interleave on a slot.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct heat_chunk_cache);
} chunk_caches SEC(".maps");

struct cgroup_map {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, HEAT_CGROUP_ENTRIES);
	__type(key, __u64); /* cgroup id */
	__type(value, struct heat_cgroup_val);
} cgroups0 SEC(".maps"), cgroups1 SEC(".maps");

/*
 * The backing files the mount opened (remote files and cache copies), filled
 * by the daemon when it opens one. With cgroup_files_only, the per-cgroup
 * totals count a file's pages only when it is here: other files on the same
 * file system are heat of nobody's job. One hash lookup, taken only for
 * events that would be counted per cgroup.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, HEAT_FILE_ENTRIES);
	__type(key, struct heat_file_key);
	__type(value, __u8);
} served_files SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2); /* index: the counter set */
	__type(key, __u32);
	__type(value, struct heat_cgroup_pending);
} cgroup_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct heat_served_memo);
} served_memos SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HEAT_STAT_NR);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20); /* the loader shrinks it to one page when sampling is off */
} samples SEC(".maps");

/*
 * filemap_read() calls filemap_get_pages() once per folio batch (up to 31
 * folios), and each call traces the whole remaining range [index, last]. The
 * per-task state remembers the range of the call that counted it, so the
 * calls that continue the same read count nothing.
 */
struct read_state {
	__u64 ino;
	__u64 index;
	__u64 last;
	__u32 dev;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct read_state);
} read_states SEC(".maps");

/*
 * Event times at tick precision: bpf_ktime_get_ns() once per jiffy and CPU,
 * bpf_jiffies64() (a plain load) otherwise. Reading the clock on every event
 * was a sixth of the programs' cost; heat needs no finer time than a tick.
 */
struct tick_clock {
	__u64 jiffies;
	__u64 ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tick_clock);
} tick_clocks SEC(".maps");

static __always_inline __u64 tick_now(void)
{
	__u32 zero = 0;
	struct tick_clock *c = bpf_map_lookup_elem(&tick_clocks, &zero);
	__u64 j = bpf_jiffies64();

	if (!c)
		return bpf_ktime_get_ns();
	if (c->jiffies != j) {
		c->jiffies = j;
		c->ns = bpf_ktime_get_ns();
	}
	return c->ns;
}

static __always_inline void stat_add(__u32 slot, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &slot);

	if (v)
		*v += n; /* per-CPU slot: no atomic (a preemption mid-add can drop one: rare) */
}

static __always_inline bool watched(__u32 dev)
{
	__u32 n = nr_watched_devs;
	int i;

	for (i = 0; i < HEAT_MAX_DEVICES; i++) {
		if (i >= n)
			return false;
		if (watched_devs[i] == dev)
			return true;
	}
	return false;
}

static __always_inline void sample(__u32 dev, __u64 ino, __u64 index, __u32 nr_pages, __u32 kind,
				   __u64 cgroup_id, __u64 now)
{
	__u32 slot = HEAT_STAT_EVENTS;
	__u64 *events = bpf_map_lookup_elem(&stats, &slot);
	struct heat_sample *s;

	/* stats[EVENTS] was bumped for this event already: sample every Nth. */
	if (!events || *events % sample_rate)
		return;
	s = bpf_ringbuf_reserve(&samples, sizeof(*s), 0);
	if (!s) {
		stat_add(HEAT_STAT_SAMPLES_DROPPED, 1);
		return;
	}
	s->dev = dev;
	s->ino = ino;
	s->index = index;
	s->nr_pages = nr_pages;
	s->kind = kind;
	s->cgroup_id = cgroup_id;
	s->ts_ns = now;
	s->pad = 0;
	bpf_ringbuf_submit(s, 0);
}

/*
 * Adds a cache slot's counters to its chunk's entry in counter set `set`'s map
 * (created when missing). A failed insert loses the slot's counts and adds one
 * to HEAT_STAT_LOST. A global function, so the verifier checks it once rather
 * than once per chunk of add_chunks()'s loop (inlined, the loop passed the
 * verifier's limit of a million instructions), and the hit path carries none
 * of it. Each map is still named at its own call site.
 */
__noinline int heat_flush_slot(__u32 set, struct heat_chunk_slot *s)
{
	struct heat_val *v, init = {};
	long err;

	if (!s)
		return 0;
	v = set ? bpf_map_lookup_elem(&chunks1, &s->key) : bpf_map_lookup_elem(&chunks0, &s->key);
	if (!v) {
		init.pages_requested = s->pages_requested;
		init.pages_missed = s->pages_missed;
		init.mmap_faults = s->mmap_faults;
		init.first_ns = s->first_ns;
		init.last_ns = s->last_ns;
		err = set ? bpf_map_update_elem(&chunks1, &s->key, &init, BPF_NOEXIST)
			  : bpf_map_update_elem(&chunks0, &s->key, &init, BPF_NOEXIST);
		if (!err) {
			stat_add(HEAT_STAT_INSERTS, 1);
			return 0;
		}
		/* Another CPU created the key first: add to its value. */
		if (err == -EEXIST)
			v = set ? bpf_map_lookup_elem(&chunks1, &s->key)
				: bpf_map_lookup_elem(&chunks0, &s->key);
		if (!v) {
			stat_add(HEAT_STAT_LOST, 1);
			return 0;
		}
	}
	__sync_fetch_and_add(&v->pages_requested, s->pages_requested);
	__sync_fetch_and_add(&v->pages_missed, s->pages_missed);
	__sync_fetch_and_add(&v->mmap_faults, s->mmap_faults);
	/* Times are at tick precision: a race between two CPUs here moves one by a tick. */
	if (s->first_ns < v->first_ns)
		v->first_ns = s->first_ns;
	if (s->last_ns > v->last_ns)
		v->last_ns = s->last_ns;
	return 0;
}

/* The cache slot of a key: the top bits of a multiplicative (Fibonacci) hash. */
static __always_inline __u32 slot_of(const struct heat_key *key)
{
	__u64 h = (key->ino ^ (key->chunk << 40) ^ ((__u64)key->dev << 20)) * 0x9e3779b97f4a7c15ULL;

	return (h >> (64 - HEAT_CHUNK_CACHE_BITS)) & (HEAT_CHUNK_CACHE_SLOTS - 1);
}

/*
 * Adds one event's pages of one chunk to this CPU's cache; a slot holding
 * another chunk goes into the chunk map first.
 */
static __always_inline void add_chunk(struct heat_chunk_cache *cache, __u32 set,
				      const struct heat_key *key, __u64 pages, __u32 kind,
				      __u64 now)
{
	struct heat_chunk_slot *s = &cache->slots[slot_of(key)];
	bool used = s->pages_requested | s->pages_missed | s->mmap_faults;

	if (!used || s->key.chunk != key->chunk || s->key.ino != key->ino ||
	    s->key.dev != key->dev) {
		if (used)
			heat_flush_slot(set, s);
		s->key = *key;
		s->pages_requested = 0;
		s->pages_missed = 0;
		s->mmap_faults = 0;
		s->first_ns = now;
	}
	switch (kind) {
	case HEAT_EV_MISS:
		s->pages_missed += pages;
		break;
	case HEAT_EV_FAULT:
		s->mmap_faults += 1;
		/* fallthrough */
	default:
		s->pages_requested += pages;
	}
	s->last_ns = now;
}

/*
 * Is (dev, ino) in served_files? Reads of one file come in runs, so the
 * latest answer is kept per CPU and reused while served_gen has not moved
 * (it is read before the lookup: a change made during it leaves the memo
 * stale, and the next event looks again).
 */
static __always_inline bool served(__u32 dev, __u64 ino)
{
	struct heat_file_key key = {.dev = dev, .ino = ino};
	__u32 zero = 0;
	struct heat_served_memo *m;
	__u64 gen;
	bool yes;

	if (!cgroup_files_only)
		return true;
	gen = served_gen;
	m = bpf_map_lookup_elem(&served_memos, &zero);
	if (m && m->gen == gen && m->ino == ino && m->dev == dev)
		return m->served;
	yes = bpf_map_lookup_elem(&served_files, &key) != NULL;
	if (m) {
		m->dev = dev;
		m->ino = ino;
		m->served = yes;
		m->gen = gen;
	}
	return yes;
}

static __always_inline void add_cgroup(void *cgroups, __u64 cgroup_id, __u64 requested,
				       __u64 missed)
{
	struct heat_cgroup_val *v = bpf_map_lookup_elem(cgroups, &cgroup_id);

	if (!v) {
		struct heat_cgroup_val init = {};

		/* -EEXIST when another CPU created it first: either way, look it up again. */
		bpf_map_update_elem(cgroups, &cgroup_id, &init, BPF_NOEXIST);
		v = bpf_map_lookup_elem(cgroups, &cgroup_id);
		if (!v) {
			stat_add(HEAT_STAT_CG_LOST, 1);
			return;
		}
	}
	/* Per-CPU value: plain adds. */
	v->pages_requested += requested;
	v->pages_missed += missed;
}

/*
 * Adds to this CPU's pending slot of the set; the slot goes into the set's
 * map when an event of another cgroup arrives. A fault counts its one page.
 * Two programs interleaving on one CPU (a preemption mid-update) can move a
 * few pages to the wrong cgroup; the chunk counts are not affected.
 */
static __always_inline void add_cgroup_pending(__u32 set, void *cgroups, __u64 cgroup_id,
					       __u64 pages, __u32 kind)
{
	struct heat_cgroup_pending *p = bpf_map_lookup_elem(&cgroup_pending, &set);

	if (!p) {
		add_cgroup(cgroups, cgroup_id, kind == HEAT_EV_MISS ? 0 : pages,
			   kind == HEAT_EV_MISS ? pages : 0);
		return;
	}
	if (p->cgroup_id != cgroup_id) {
		if (p->pages_requested || p->pages_missed)
			add_cgroup(cgroups, p->cgroup_id, p->pages_requested, p->pages_missed);
		p->cgroup_id = cgroup_id;
		p->pages_requested = 0;
		p->pages_missed = 0;
	}
	if (kind == HEAT_EV_MISS)
		p->pages_missed += pages;
	else
		p->pages_requested += pages;
}

/*
 * Adds pages [first, last] of one file to counter set `set` (its CPU's cache,
 * and behind it the set's chunk map), split at chunk boundaries.
 */
static __always_inline void add_chunks(__u32 set, __u32 dev, __u64 ino, __u64 first,
				       __u64 last, __u32 kind, __u64 now)
{
	struct heat_key key = {.dev = dev, .ino = ino};
	struct heat_chunk_cache *cache = bpf_map_lookup_elem(&chunk_caches, &set);
	__u32 shift = chunk_page_shift;
	__u64 idx = first;
	int i;

	if (!cache) {
		stat_add(HEAT_STAT_LOST, 1);
		return;
	}
	for (i = 0; i < HEAT_MAX_CHUNK_SPLIT; i++) {
		__u64 chunk = idx >> shift;
		__u64 chunk_last = ((chunk + 1) << shift) - 1;
		__u64 end = last < chunk_last ? last : chunk_last;

		key.chunk = chunk;
		add_chunk(cache, set, &key, end - idx + 1, kind, now);
		if (end >= last)
			return;
		idx = end + 1;
	}
	stat_add(HEAT_STAT_LOST, 1);
}

/*
 * Counts one event of pages [first, last]. Each map of a set is named at its
 * own call site (not through one pointer chosen at run time), so the verifier
 * still inlines the lookups: a shared site would cost ~40 ns an event.
 */
static __always_inline void account(__u32 dev, __u64 ino, __u64 first, __u64 last, __u32 kind)
{
	__u64 now, cgroup_id;
	bool per_cgroup;

	/* The daemon's own copies (promotions, io_uring workers included) are not heat. */
	if (ignore_tgid && bpf_get_current_pid_tgid() >> 32 == ignore_tgid)
		return;
	now = tick_now();
	/* The cgroup id is a helper call (~30 ns): only for events that need it. */
	per_cgroup = count_cgroups && served(dev, ino);
	cgroup_id = per_cgroup || sample_rate ? bpf_get_current_cgroup_id() : 0;
	stat_add(HEAT_STAT_EVENTS, 1);
	if (sample_rate)
		sample(dev, ino, first, last - first + 1, kind, cgroup_id, now);
	if (per_cgroup) {
		if (cgroup_set)
			add_cgroup_pending(1, &cgroups1, cgroup_id, last - first + 1, kind);
		else
			add_cgroup_pending(0, &cgroups0, cgroup_id, last - first + 1, kind);
	}
	add_chunks(chunk_set ? 1 : 0, dev, ino, first, last, kind, now);
}

/* Last page of a file of isize bytes; false for an empty file. */
static __always_inline bool last_page(__s64 isize, __u64 *last)
{
	if (isize <= 0)
		return false;
	*last = (__u64)(isize - 1) >> page_shift;
	return true;
}

/*
 * Handlers. isize < 0 means unknown (classic tracepoints do not record it):
 * the ranges are then counted as traced, not clamped to the end of file.
 */
static __always_inline void on_get_pages(__u32 dev, __u64 ino, __u64 index, __u64 last, __s64 isize)
{
	struct read_state *st;
	__u64 eof;

	/*
	 * Only a multi-page call can start or continue a read that takes several
	 * batches, and skipping the state for single pages keeps small random
	 * reads (the hot path) free of it. The price: a read whose final batch is
	 * a single page counts that page twice.
	 */
	st = index < last ? bpf_task_storage_get(&read_states, bpf_get_current_task_btf(), 0,
						 BPF_LOCAL_STORAGE_GET_F_CREATE)
			  : NULL;
	if (st) {
		if (st->dev == dev && st->ino == ino && st->last == last && index > st->index &&
		    index <= last) {
			st->index = index;
			stat_add(HEAT_STAT_CONTINUED, 1);
			return;
		}
		st->dev = dev;
		st->ino = ino;
		st->index = index;
		st->last = last;
	}
	if (isize >= 0) {
		/* read() asks for its whole buffer; the file may end before. */
		if (!last_page(isize, &eof) || index > eof)
			return;
		if (last > eof)
			last = eof;
	}
	account(dev, ino, index, last, HEAT_EV_READ);
}

static __always_inline void on_map_pages(__u32 dev, __u64 ino, __u64 index, __u64 last, __s64 isize)
{
	__u64 eof;

	if (isize >= 0) {
		/* The fault-around window does not stop at the end of file. */
		if (!last_page(isize, &eof) || index > eof)
			return;
		if (last > eof)
			last = eof;
	}
	if (last < index)
		return;
	account(dev, ino, index, last, HEAT_EV_MAP);
}

/* ---- tp_btf: typed arguments, direct loads ---- */

SEC("tp_btf/mm_filemap_get_pages")
int BPF_PROG(btf_get_pages, struct address_space *mapping, unsigned long index, unsigned long last)
{
	struct inode *host = mapping->host;
	__u32 dev = host->i_sb->s_dev;

	if (watched(dev))
		on_get_pages(dev, host->i_ino, index, last, host->i_size);
	return 0;
}

SEC("tp_btf/mm_filemap_map_pages")
int BPF_PROG(btf_map_pages, struct address_space *mapping, unsigned long index, unsigned long last)
{
	struct inode *host = mapping->host;
	__u32 dev = host->i_sb->s_dev;

	if (watched(dev))
		on_map_pages(dev, host->i_ino, index, last, host->i_size);
	return 0;
}

SEC("tp_btf/mm_filemap_fault")
int BPF_PROG(btf_fault, struct address_space *mapping, unsigned long index)
{
	struct inode *host = mapping->host;
	__u32 dev = host->i_sb->s_dev;

	if (watched(dev))
		account(dev, host->i_ino, index, index, HEAT_EV_FAULT);
	return 0;
}

SEC("tp_btf/mm_filemap_add_to_page_cache")
int BPF_PROG(btf_add_to_page_cache, struct folio *folio)
{
	struct inode *host = folio->mapping->host;
	__u32 dev = host->i_sb->s_dev;
	__u64 index = folio->index;

	if (watched(dev))
		account(dev, host->i_ino, index, index + heat_folio_nr_pages(folio) - 1,
			HEAT_EV_MISS);
	return 0;
}

/* ---- raw_tp: the same arguments as untyped words, read through CO-RE ---- */

SEC("raw_tp/mm_filemap_get_pages")
int BPF_PROG(raw_get_pages, struct address_space *mapping, unsigned long index, unsigned long last)
{
	struct inode *host = BPF_CORE_READ(mapping, host);
	__u32 dev = BPF_CORE_READ(host, i_sb, s_dev);

	if (watched(dev))
		on_get_pages(dev, BPF_CORE_READ(host, i_ino), index, last,
			     BPF_CORE_READ(host, i_size));
	return 0;
}

SEC("raw_tp/mm_filemap_map_pages")
int BPF_PROG(raw_map_pages, struct address_space *mapping, unsigned long index, unsigned long last)
{
	struct inode *host = BPF_CORE_READ(mapping, host);
	__u32 dev = BPF_CORE_READ(host, i_sb, s_dev);

	if (watched(dev))
		on_map_pages(dev, BPF_CORE_READ(host, i_ino), index, last,
			     BPF_CORE_READ(host, i_size));
	return 0;
}

SEC("raw_tp/mm_filemap_fault")
int BPF_PROG(raw_fault, struct address_space *mapping, unsigned long index)
{
	__u32 dev = BPF_CORE_READ(mapping, host, i_sb, s_dev);

	if (watched(dev))
		account(dev, BPF_CORE_READ(mapping, host, i_ino), index, index, HEAT_EV_FAULT);
	return 0;
}

SEC("raw_tp/mm_filemap_add_to_page_cache")
int BPF_PROG(raw_add_to_page_cache, struct folio *folio)
{
	struct inode *host = BPF_CORE_READ(folio, mapping, host);
	__u32 dev = BPF_CORE_READ(host, i_sb, s_dev);
	__u64 index = BPF_CORE_READ(folio, index);

	if (watched(dev))
		account(dev, BPF_CORE_READ(host, i_ino), index,
			index + heat_folio_nr_pages(folio) - 1, HEAT_EV_MISS);
	return 0;
}

/* ---- classic tracepoints: the recorded event, no file size at hand ---- */

SEC("tracepoint/filemap/mm_filemap_get_pages")
int tp_get_pages(struct trace_event_raw_mm_filemap_op_page_cache_range *ctx)
{
	__u32 dev = ctx->s_dev;

	if (watched(dev))
		on_get_pages(dev, ctx->i_ino, ctx->index, ctx->last_index, -1);
	return 0;
}

SEC("tracepoint/filemap/mm_filemap_map_pages")
int tp_map_pages(struct trace_event_raw_mm_filemap_op_page_cache_range *ctx)
{
	__u32 dev = ctx->s_dev;

	if (watched(dev))
		on_map_pages(dev, ctx->i_ino, ctx->index, ctx->last_index, -1);
	return 0;
}

SEC("tracepoint/filemap/mm_filemap_fault")
int tp_fault(struct trace_event_raw_mm_filemap_fault *ctx)
{
	__u32 dev = ctx->s_dev;

	if (watched(dev))
		account(dev, ctx->i_ino, ctx->index, ctx->index, HEAT_EV_FAULT);
	return 0;
}

SEC("tracepoint/filemap/mm_filemap_add_to_page_cache")
int tp_add_to_page_cache(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	__u32 dev = ctx->s_dev;
	__u64 index = ctx->index;
	__u32 order = 0;

	/* Linux 6.3 added the folio order to the event; before, one page each. */
	if (bpf_core_field_exists(ctx->order))
		order = ctx->order;
	if (watched(dev))
		account(dev, ctx->i_ino, index, index + (1U << (order & 31)) - 1, HEAT_EV_MISS);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
