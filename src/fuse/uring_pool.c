// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The threads that serve the FUSE ring queues: started before the INIT
 * reply, bound to their queue's CPU, more of them while a queue's
 * threads are all busy, and joined when the connection ends.
 */
#include "internal.h"
#include "uring.h"
#include "../common/caps.h"
#include "../common/log.h"

#include <errno.h>
#include <linux/capability.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/*
 * Threads per queue at the start, and at most. A request waits for the
 * threads of its own CPU, so a queue whose threads are all inside a
 * request gets one more, which keeps an entry free for the next request
 * while long ones (a copy-up) run.
 */
#define URING_THREADS_START 2
#define URING_THREADS_MAX 8

enum { URING_WAIT, URING_GO, URING_STOP };

/* The kernel's queue count: the number of possible CPUs. */
static unsigned int possible_cpus(void)
{
	FILE *f = fopen("/sys/devices/system/cpu/possible", "re");
	unsigned int a, b, n = 0;
	int c;

	if (!f)
		return 0;
	while (fscanf(f, "%u", &a) == 1) {
		b = a;
		c = fgetc(f);
		if (c == '-' && fscanf(f, "%u", &b) == 1)
			c = fgetc(f);
		n += b >= a ? b - a + 1 : 0;
		if (c != ',')
			break;
	}
	fclose(f);
	return n;
}

/* Bind the thread to its queue's CPU, when this process may run there. */
static void uring_bind_cpu(struct fuse_uring_thread *t)
{
	cpu_set_t allowed, one;

	if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0 ||
	    !CPU_ISSET(t->qid, &allowed))
		return;
	CPU_ZERO(&one);
	CPU_SET(t->qid, &one);
	if (sched_setaffinity(0, sizeof(one), &one) < 0)
		log_warn_rl("binding a ring thread to CPU %u failed: %s",
			    t->qid, strerror(errno));
}

/*
 * Leaving idle priority needs CAP_SYS_NICE (or an RLIMIT_NICE of 20), so
 * the hand-off is used only where the way back is sure.
 */
static bool may_leave_idle_priority(void)
{
	return have_capability(CAP_SYS_NICE);
}

static int uring_wait_state(struct fuse_session *se)
{
	int state;

	pthread_mutex_lock(&se->uring_lock);
	while (se->uring_state == URING_WAIT)
		pthread_cond_wait(&se->uring_cond, &se->uring_lock);
	state = se->uring_state;
	pthread_mutex_unlock(&se->uring_lock);
	return state;
}

static void *uring_thread_main(void *arg)
{
	struct fuse_uring_thread *t = arg;
	struct fuse_session *se = t->se;

	uring_bind_cpu(t);
	/*
	 * The hand-off returns to the thread's own policy afterwards. A
	 * real-time or idle policy that lamina was started with is left
	 * alone.
	 */
	t->policy = se->uring_policy;
	t->sched = se->uring_sched;
	/* A thread started by a ring thread at idle priority inherited
	 * that priority: take the daemon's own. */
	if (sched_getscheduler(0) != t->policy &&
	    sched_setscheduler(0, t->policy, &t->sched) < 0)
		t->policy = -1;
	t->tid = gettid();
	t->handoff = se->uring_handoff &&
		     (t->policy == SCHED_OTHER || t->policy == SCHED_BATCH);
	/* As in the /dev/fuse workers: a private umask per thread. */
	if (unshare(CLONE_FS) < 0)
		log_warn("unshare(CLONE_FS) failed: %s", strerror(errno));
	t->setup_err = fuse_uring_thread_setup(t);
	pthread_mutex_lock(&se->uring_lock);
	se->uring_setup_done++;
	pthread_cond_broadcast(&se->uring_cond);
	pthread_mutex_unlock(&se->uring_lock);
	if (uring_wait_state(se) == URING_GO && !t->setup_err)
		fuse_uring_serve(t);
	uring_exit(&t->ring);
	return NULL;
}

static void uring_set_state(struct fuse_session *se, int state)
{
	pthread_mutex_lock(&se->uring_lock);
	se->uring_state = state;
	pthread_cond_broadcast(&se->uring_cond);
	pthread_mutex_unlock(&se->uring_lock);
}

/* Start the next thread of queue q. The caller holds uring_lock. */
static int uring_start_thread(struct fuse_session *se,
			      struct fuse_uring_queue *q)
{
	struct fuse_uring_thread *t = &se->uring[q->first + q->started];
	int err;

	memset(t, 0, sizeof(*t));
	t->se = se;
	t->qid = q->qid;
	t->queue = q;
	t->payload_size = se->uring_payload_size;
	t->ring.fd = -1;
	err = pthread_create(&t->thread, NULL, uring_thread_main, t);
	if (err)
		return -err;
	t->started = true;
	atomic_fetch_add(&q->started, 1);
	se->nuring++;
	return 0;
}

/*
 * Lay out the queues: URING_THREADS_MAX slots for a CPU this process may
 * run on, one for a CPU that is offline or outside its cpuset, which
 * still needs an entry before the kernel uses the rings. Returns the
 * number of thread slots.
 */
static unsigned int uring_lay_out_queues(struct fuse_uring_queue *queues,
					 unsigned int count)
{
	unsigned int q, slots = 0;
	cpu_set_t allowed;

	if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
		CPU_ZERO(&allowed);
	for (q = 0; q < count; q++) {
		queues[q].qid = q;
		queues[q].first = slots;
		queues[q].max = CPU_ISSET(q, &allowed) ? URING_THREADS_MAX : 1;
		slots += queues[q].max;
	}
	return slots;
}

static int uring_start_threads(struct fuse_session *se)
{
	unsigned int q, k;
	int err = 0;

	pthread_mutex_lock(&se->uring_lock);
	for (q = 0; !err && q < se->nqueues; q++) {
		struct fuse_uring_queue *queue = &se->uring_queues[q];
		unsigned int n = queue->max < URING_THREADS_START
				     ? queue->max
				     : URING_THREADS_START;

		for (k = 0; !err && k < n; k++)
			err = uring_start_thread(se, queue);
	}
	/* Wait until every started thread has its ring or an error. */
	while (se->uring_setup_done < se->nuring)
		pthread_cond_wait(&se->uring_cond, &se->uring_lock);
	pthread_mutex_unlock(&se->uring_lock);
	for (k = 0; !err && k < se->uring_slots; k++)
		if (se->uring[k].started)
			err = se->uring[k].setup_err;
	return err;
}

void fuse_uring_request_begin(struct fuse_uring_thread *t)
{
	struct fuse_uring_queue *q = t->queue;
	struct fuse_session *se = t->se;
	unsigned int busy = atomic_fetch_add(&q->busy, 1) + 1;
	int err = 0;

	if (busy < atomic_load(&q->started) ||
	    atomic_load(&q->started) >= q->max)
		return;
	pthread_mutex_lock(&se->uring_lock);
	if (se->uring_state == URING_GO && busy >= atomic_load(&q->started) &&
	    atomic_load(&q->started) < q->max)
		err = uring_start_thread(se, q);
	pthread_mutex_unlock(&se->uring_lock);
	if (err)
		log_warn_rl(
		    "starting another thread for FUSE ring queue %u failed: %s",
		    q->qid, strerror(-err));
}

void fuse_uring_request_end(struct fuse_uring_thread *t)
{
	atomic_fetch_sub(&t->queue->busy, 1);
}

int fuse_uring_prepare(struct fuse_session *se, size_t payload_size)
{
	unsigned int queues = possible_cpus();
	int err;

	if (se->uring)
		return -EALREADY;
	if (queues == 0 || queues > CPU_SETSIZE)
		return -ENOTSUP;
	se->uring_handoff = may_leave_idle_priority();
	se->uring_policy = sched_getscheduler(0);
	if (se->uring_policy < 0 || sched_getparam(0, &se->uring_sched) < 0)
		se->uring_handoff = false;
	se->uring_payload_size = payload_size;
	se->uring_queues = calloc(queues, sizeof(*se->uring_queues));
	if (!se->uring_queues)
		return -ENOMEM;
	se->nqueues = queues;
	se->uring_slots = uring_lay_out_queues(se->uring_queues, queues);
	se->uring = calloc(se->uring_slots, sizeof(*se->uring));
	if (!se->uring) {
		free(se->uring_queues);
		se->uring_queues = NULL;
		return -ENOMEM;
	}
	err = uring_start_threads(se);
	if (err) {
		log_info(
		    "FUSE over io_uring is not available (%s); requests go through /dev/fuse",
		    strerror(-err));
		fuse_uring_go(se, false);
		fuse_uring_join(se);
	}
	return err;
}

void fuse_uring_go(struct fuse_session *se, bool ok)
{
	if (!se->uring)
		return;
	if (ok)
		fuse_uring_guard_start(se);
	atomic_store(&se->uring_active, ok);
	uring_set_state(se, ok ? URING_GO : URING_STOP);
}

bool fuse_session_uring_active(const struct fuse_session *se)
{
	return atomic_load(&se->uring_active);
}

void fuse_uring_join(struct fuse_session *se)
{
	unsigned int i;

	if (!se->uring)
		return;
	/* No thread starts another one from here on. */
	uring_set_state(se, URING_STOP);
	fuse_uring_guard_stop(se);
	for (i = 0; i < se->uring_slots; i++) {
		struct fuse_uring_thread *t = &se->uring[i];

		if (!t->started)
			continue;
		pthread_join(t->thread, NULL);
		free(t->buf);
		free(t->hdr);
	}
	free(se->uring);
	free(se->uring_queues);
	se->uring = NULL;
	se->uring_queues = NULL;
	se->nuring = 0;
	se->nqueues = 0;
	se->uring_slots = 0;
	se->uring_setup_done = 0;
	se->uring_state = URING_WAIT;
}
