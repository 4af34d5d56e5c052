// SPDX-License-Identifier: GPL-2.0-or-later
/* A minimal io_uring: setup, one submission queue, one completion queue. */
#include "ring.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define URING_SQE_SIZE 128

static int sys_setup(unsigned int entries, struct io_uring_params *p)
{
	return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_enter(int fd, unsigned int submit, unsigned int wait,
		     unsigned int flags)
{
	return (int)syscall(__NR_io_uring_enter, fd, submit, wait, flags, NULL,
			    0);
}

/*
 * Deferred task work runs completions in this thread only when it waits,
 * which suits one thread per ring. Older kernels lack it.
 */
static int ring_create(unsigned int entries, struct io_uring_params *p)
{
	int fd;

	memset(p, 0, sizeof(*p));
	p->flags = IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER |
		   IORING_SETUP_DEFER_TASKRUN;
	fd = sys_setup(entries, p);
	if (fd >= 0 || errno != EINVAL)
		return fd < 0 ? -errno : fd;
	memset(p, 0, sizeof(*p));
	p->flags = IORING_SETUP_SQE128;
	fd = sys_setup(entries, p);
	return fd < 0 ? -errno : fd;
}

static void *ring_map(int fd, size_t len, off_t offset)
{
	void *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_POPULATE, fd, offset);

	return m == MAP_FAILED ? NULL : m;
}

static int ring_map_queues(struct uring *r, const struct io_uring_params *p)
{
	r->sq_map_len = p->sq_off.array + p->sq_entries * sizeof(unsigned int);
	r->cq_map_len =
	    p->cq_off.cqes + p->cq_entries * sizeof(struct io_uring_cqe);
	if (p->features & IORING_FEAT_SINGLE_MMAP) {
		if (r->cq_map_len > r->sq_map_len)
			r->sq_map_len = r->cq_map_len;
		r->cq_map_len = 0;
	}
	r->sq_map = ring_map(r->fd, r->sq_map_len, IORING_OFF_SQ_RING);
	if (!r->sq_map)
		return -errno;
	r->cq_map = r->sq_map;
	if (r->cq_map_len) {
		r->cq_map = ring_map(r->fd, r->cq_map_len, IORING_OFF_CQ_RING);
		if (!r->cq_map)
			return -errno;
	}
	r->sqes_len = p->sq_entries * URING_SQE_SIZE;
	r->sqes = ring_map(r->fd, r->sqes_len, IORING_OFF_SQES);
	return r->sqes ? 0 : -errno;
}

int uring_init(struct uring *r, unsigned int entries)
{
	struct io_uring_params p;
	char *sq, *cq;
	int err;

	memset(r, 0, sizeof(*r));
	r->fd = ring_create(entries, &p);
	if (r->fd < 0)
		return r->fd;
	err = ring_map_queues(r, &p);
	if (err) {
		uring_exit(r);
		return err;
	}
	sq = r->sq_map;
	cq = r->cq_map;
	r->sq_entries = p.sq_entries;
	r->sq_tail = (unsigned int *)(sq + p.sq_off.tail);
	r->sq_mask = (unsigned int *)(sq + p.sq_off.ring_mask);
	r->sq_array = (unsigned int *)(sq + p.sq_off.array);
	r->cq_head = (unsigned int *)(cq + p.cq_off.head);
	r->cq_tail = (unsigned int *)(cq + p.cq_off.tail);
	r->cq_mask = (unsigned int *)(cq + p.cq_off.ring_mask);
	r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
	return 0;
}

void uring_exit(struct uring *r)
{
	if (r->sqes)
		munmap(r->sqes, r->sqes_len);
	if (r->cq_map && r->cq_map != r->sq_map)
		munmap(r->cq_map, r->cq_map_len);
	if (r->sq_map)
		munmap(r->sq_map, r->sq_map_len);
	if (r->fd >= 0)
		close(r->fd);
	memset(r, 0, sizeof(*r));
	r->fd = -1;
}

struct io_uring_sqe *uring_get_sqe(struct uring *r)
{
	unsigned int tail = *r->sq_tail + r->to_submit;
	unsigned int idx = tail & *r->sq_mask;
	struct io_uring_sqe *sqe;

	if (r->to_submit >= r->sq_entries)
		return NULL;
	sqe = (struct io_uring_sqe *)(r->sqes + idx * URING_SQE_SIZE);
	memset(sqe, 0, URING_SQE_SIZE);
	r->sq_array[idx] = idx;
	r->to_submit++;
	return sqe;
}

static bool ring_reap(struct uring *r, int32_t *res, uint64_t *user_data)
{
	unsigned int head = *r->cq_head;
	const struct io_uring_cqe *cqe;

	if (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE))
		return false;
	cqe = &r->cqes[head & *r->cq_mask];
	*res = cqe->res;
	*user_data = cqe->user_data;
	__atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
	return true;
}

int uring_submit(struct uring *r)
{
	unsigned int submit = r->to_submit;
	int n;

	__atomic_store_n(r->sq_tail, *r->sq_tail + submit, __ATOMIC_RELEASE);
	r->to_submit = 0;
	while (submit) {
		n = sys_enter(r->fd, submit, 0, 0);
		if (n < 0 && errno != EINTR)
			return -errno;
		if (n > 0)
			submit -=
			    (unsigned int)n < submit ? (unsigned int)n : submit;
	}
	return 0;
}

int uring_submit_and_wait(struct uring *r, int32_t *res, uint64_t *user_data)
{
	unsigned int submit = r->to_submit;

	if (submit)
		__atomic_store_n(r->sq_tail, *r->sq_tail + submit,
				 __ATOMIC_RELEASE);
	r->to_submit = 0;
	for (;;) {
		int n;

		if (!submit && ring_reap(r, res, user_data))
			return 0;
		n = sys_enter(r->fd, submit, 1, IORING_ENTER_GETEVENTS);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		submit -= (unsigned int)n < submit ? (unsigned int)n : submit;
		if (ring_reap(r, res, user_data))
			return 0;
	}
}
