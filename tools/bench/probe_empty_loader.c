/*
 * probe_empty_loader: loads a BPF object (tools/bench/probe_empty.bpf.o),
 * attaches every program by its section name, and holds them for SECONDS.
 * Used by tools/bench/probe_overhead.sh for its "empty" row.
 *
 *   probe_empty_loader OBJECT SECONDS
 */
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct bpf_object *obj;
	struct bpf_program *prog;
	int err, attached = 0;

	if (argc != 3) {
		fprintf(stderr, "usage: %s OBJECT SECONDS\n", argv[0]);
		return 2;
	}
	obj = bpf_object__open_file(argv[1], NULL);
	if (!obj) {
		fprintf(stderr, "probe_empty_loader: open %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	err = bpf_object__load(obj);
	if (err) {
		fprintf(stderr, "probe_empty_loader: load %s: %s\n", argv[1], strerror(-err));
		return 1;
	}
	bpf_object__for_each_program(prog, obj) {
		if (!bpf_program__attach(prog)) {
			fprintf(stderr, "probe_empty_loader: attach %s: %s\n", bpf_program__name(prog),
				strerror(errno));
			return 1;
		}
		attached++;
	}
	fprintf(stderr, "probe_empty_loader: %d programs attached\n", attached);
	usleep((useconds_t)(atof(argv[2]) * 1e6));
	return 0; /* exit closes the links: the programs detach */
}
