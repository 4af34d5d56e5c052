/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A minimal io_uring of 128-byte submission entries, driven by one
 * thread, on the raw system calls: enough to pass FUSE ring commands.
 */
#ifndef LAMINA_FUSE_RING_H
#define LAMINA_FUSE_RING_H

#include <linux/io_uring.h>
#include <stddef.h>
#include <stdint.h>

struct uring {
	int fd;
	unsigned int sq_entries;
	void *sq_map;
	size_t sq_map_len;
	void *cq_map; /* == sq_map with IORING_FEAT_SINGLE_MMAP */
	size_t cq_map_len;
	unsigned int *sq_tail, *sq_mask, *sq_array;
	unsigned int *cq_head, *cq_tail, *cq_mask;
	struct io_uring_cqe *cqes;
	unsigned char *sqes; /* 128 bytes each */
	size_t sqes_len;
	unsigned int to_submit;
};

/* Set up a ring of `entries` slots, owned by the calling thread. */
int uring_init(struct uring *r, unsigned int entries);
void uring_exit(struct uring *r);

/* A zeroed submission entry, or NULL when the ring is full. */
struct io_uring_sqe *uring_get_sqe(struct uring *r);

/*
 * Submit what was queued and wait for one completion. Returns 0 with
 * *res and *user_data filled, or a negative errno.
 */
int uring_submit_and_wait(struct uring *r, int32_t *res, uint64_t *user_data);
/* Submit what was queued without waiting. */
int uring_submit(struct uring *r);

#endif
