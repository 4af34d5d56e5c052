/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Structures private to the FUSE transport. */
#ifndef LAMINA_FUSE_INTERNAL_H
#define LAMINA_FUSE_INTERNAL_H

#include "fuse_compat.h"
#include "transport.h"
#include "uring.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/uio.h>

/* Oldest protocol minor that lamina serves: 7.31 (Linux 5.4). */
#define FUSE_MIN_MINOR 31
#define FUSE_MAX_PAGES_WANTED 256

struct fuse_session {
	int fd;		 /* the /dev/fuse descriptor of the mount */
	char *mountpoint; /* NULL until mounted */
	/* When fusermount3 mounted or tried to: its exit status (128 plus
	 * the signal if killed), else -1, and the first line it wrote to
	 * its standard error. */
	int fusermount_status;
	char fusermount_error[256];
	dev_t mount_dev;  /* the mount's device number, 0 if unknown */
	uint64_t mount_id; /* the kernel's ID of the mount, 0 if unknown */
	const struct fuse_ops *ops;
	void *fs;
	bool debug;
	struct fuse_conn conn;
	size_t bufsize; /* request buffer: max_write plus headers */

	atomic_bool exited;
	atomic_bool got_init;
	atomic_bool got_destroy;
	pthread_mutex_t ready_lock;
	pthread_cond_t ready_cond;
	bool ready_done; /* INIT replied to, or the loop ended */

	struct fuse_worker *workers;
	unsigned int nworkers;

	/* FUSE over io_uring (uring.c); uring is NULL when unused. */
	struct fuse_uring_thread *uring; /* uring_slots slots */
	unsigned int uring_slots;
	unsigned int nuring; /* threads started */
	struct fuse_uring_queue *uring_queues;
	unsigned int nqueues;
	size_t uring_payload_size;
	pthread_mutex_t uring_lock;
	pthread_cond_t uring_cond;
	int uring_state;
	unsigned int uring_setup_done;
	atomic_bool uring_active; /* negotiated and no queue failed */
	bool uring_handoff;	  /* commit replies at idle priority */
	int uring_policy;	  /* the daemon's scheduling policy */
	struct sched_param uring_sched;
	/* The guard of threads that stay at idle priority (uring_prio.c). */
	pthread_t guard;
	bool guard_started;
	bool guard_stop;	  /* under uring_lock */
	atomic_bool guard_waits;  /* for a thread to go idle */
	bool guard_reads;	  /* the threads' /proc files can be read */
	pthread_cond_t guard_cond;
	atomic_uint idle_threads; /* ring threads at idle priority now */
	atomic_bool other_work;	  /* other daemon threads have work */
	_Atomic uint64_t handoff_pause_until; /* CLOCK_MONOTONIC ns */
	void (*on_exit)(void *arg); /* called once when serving ends */
	void *on_exit_arg;
};

struct fuse_worker {
	struct fuse_session *se;
	int fd; /* a clone of se->fd, or se->fd itself */
	pthread_t thread;
	char *buf;
	int pipe[2]; /* for splicing read replies, -1 when unused */
};

struct fuse_req {
	struct fuse_session *se;
	struct fuse_worker *worker;
	struct fuse_uring_thread *uring; /* set when it came through a ring */
	int fd; /* replies go out on the descriptor the request came in */
	uint64_t unique;
	uint32_t opcode;
	uint64_t nodeid;
	struct fuse_ctx ctx;
	bool answered;
};

/* dispatch.c */
void fuse_dispatch(struct fuse_req *req, const void *in, size_t len);
const char *fuse_opname(uint32_t opcode);

/* reply.c */
int fuse_send(struct fuse_req *req, int error, const struct iovec *iov,
	      int count);
void fuse_fill_entry_out(struct fuse_entry_out *o, const struct fuse_entry *e);
void fuse_inval_if_changed(struct fuse_session *se, uint64_t nodeid,
			   const atomic_uint *counter, unsigned int seen);

/* init.c */
void fuse_do_init(struct fuse_req *req, const void *arg, size_t len);

/* session.c */
void fuse_session_mark_ready(struct fuse_session *se);

#endif
