// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The hand-off of the CPU to the caller at each reply over io_uring.
 *
 * The kernel wakes the caller inside the commit, while the ring thread
 * still runs on the caller's CPU. The scheduler moves a woken task to an
 * idle CPU when its own CPU is busy, and waking an idle vCPU of a
 * virtual machine costs tens of microseconds. A thread at idle priority
 * (SCHED_IDLE) leaves its CPU counted as free, so the caller resumes
 * there.
 *
 * While one caller keeps sending requests, as tar does, a thread stays
 * at idle priority from one request to the next. Each change of policy
 * is a system call that takes the run queue lock, and the two per
 * request took about a fifth of the daemon's time in a tar -x. Anything
 * else that runs on the CPU then comes first, so a thread at idle
 * priority could wait behind a busy loop for seconds. The guard, a
 * thread at normal priority, looks at every thread at idle priority
 * every few milliseconds. A thread that waited for its CPU returns to
 * its own policy at once and stays there for a while. A thread that
 * served nothing for a while returns too, so that an unused mount lets
 * the guard sleep.
 *
 * Where a thread cannot stay, it commits at idle priority and returns
 * to its own policy right after. That happens while other daemon
 * threads have work (the directory prefetch, at nice 19, would run
 * before it), or when the guard cannot read the thread's state. Until
 * it runs again, the guard watches it as well.
 *
 * When the requests on a CPU come from changing callers, as from the
 * threads of a parallel git status, other callers wait there too, and
 * the hand-off costs more than it saves. The thread then commits at its
 * own policy.
 */
#include "internal.h"
#include "uring.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A commit that returns this late found its CPU busy with other work. */
#define HANDOFF_LATE_NS 10000000u
/* No hand-off for this long after the CPU was found busy. */
#define HANDOFF_PAUSE_NS 1000000000u
/* No staying at idle priority for this long after the guard found a
 * thread waiting for its CPU. */
#define STARVED_PAUSE_NS 200000000u
/* How often the guard looks, and how long a thread may wait for its CPU
 * in that time. */
#define GUARD_PERIOD_NS 4000000u
#define GUARD_STARVED_NS 1000000u
/* A thread runnable at two looks that ran less than this in between
 * waited for its CPU. */
#define GUARD_RAN_NS 500000u
/* A thread that served nothing for this long leaves idle priority. */
#define GUARD_QUIET_NS 200000000u

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Move the thread to idle priority under the guard's watch. Returns
 * false when the thread stays at its own policy. */
static bool go_idle(struct fuse_uring_thread *t)
{
	static const struct sched_param idle_param;
	struct fuse_session *se = t->se;

	if (atomic_load(&t->idle))
		return true;
	if (sched_setscheduler(0, SCHED_IDLE, &idle_param) < 0)
		return false; /* no hand-off, no harm */
	atomic_fetch_add(&t->idle_gen, 1);
	atomic_store(&t->idle, true);
	if (atomic_fetch_add(&se->idle_threads, 1) == 0 &&
	    atomic_load(&se->guard_waits)) {
		pthread_mutex_lock(&se->uring_lock);
		pthread_cond_signal(&se->guard_cond);
		pthread_mutex_unlock(&se->uring_lock);
	}
	return true;
}

/* Return the calling thread to its own policy. */
static int restore_policy(struct fuse_uring_thread *t)
{
	if (sched_setscheduler(0, t->policy, &t->sched) < 0) {
		int err = -errno;

		log_err("FUSE ring queue %u cannot leave idle priority: %s",
			t->qid, strerror(-err));
		return err;
	}
	return 0;
}

/* Leave idle priority. The thread or the guard, whichever clears the
 * flag first, restores the policy. */
static int leave_idle(struct fuse_uring_thread *t)
{
	if (!atomic_exchange(&t->idle, false))
		return 0;
	atomic_fetch_sub(&t->se->idle_threads, 1);
	return restore_policy(t);
}

/*
 * Commit now at idle priority and return to the own policy after it.
 * Under the guard's watch when it runs: the thread waits for its CPU at
 * idle priority until the caller blocks, and longer behind a busy loop.
 */
static int handoff_once(struct fuse_uring_thread *t, bool watched)
{
	static const struct sched_param idle_param;
	uint64_t start = now_ns(), end;
	int err, back;

	if (watched ? !go_idle(t)
		    : sched_setscheduler(0, SCHED_IDLE, &idle_param) < 0)
		return 0;
	err = uring_submit(&t->ring);
	back = watched ? leave_idle(t) : restore_policy(t);
	if (back)
		return back;
	end = now_ns();
	if (end - start > HANDOFF_LATE_NS) {
		t->handoff_pause_until = end + HANDOFF_PAUSE_NS;
		log_debug("FUSE ring queue %u: CPU busy, hand-off paused",
			  t->qid);
	}
	return err;
}

/* The guard returned the thread to its own policy: take note. */
static void note_raised(struct fuse_uring_thread *t)
{
	if (atomic_exchange(&t->raised, URING_RAISED_NO) !=
	    URING_RAISED_STARVED)
		return;
	t->handoff_pause_until = now_ns() + STARVED_PAUSE_NS;
	log_debug(
	    "FUSE ring queue %u: waited for its CPU at idle priority, hand-off paused",
	    t->qid);
}

int fuse_uring_handoff(struct fuse_uring_thread *t)
{
	struct fuse_session *se = t->se;
	uint64_t now;
	bool watched;
	int err;

	atomic_fetch_add_explicit(&t->served, 1, memory_order_relaxed);
	if (!t->handoff)
		return 0;
	note_raised(t);
	/* A background request (RELEASE) wakes no one. */
	if (!t->caller_waits)
		return 0;
	now = now_ns();
	if (t->new_caller || t->handoff_pause_until > now ||
	    atomic_load_explicit(&se->handoff_pause_until,
				 memory_order_relaxed) > now)
		return leave_idle(t);
	watched = se->guard_started && se->guard_reads;
	if (!watched || atomic_load(&se->other_work)) {
		err = leave_idle(t);
		return err ? err : handoff_once(t, watched);
	}
	/* Stay: the commit that follows runs at idle priority. */
	go_idle(t);
	return 0;
}

void fuse_session_pause_handoff(struct fuse_session *se, uint64_t ns)
{
	uint64_t until = now_ns() + ns;

	if (se && atomic_load_explicit(&se->handoff_pause_until,
				       memory_order_relaxed) < until)
		atomic_store_explicit(&se->handoff_pause_until, until,
				      memory_order_relaxed);
}

void fuse_session_other_work(struct fuse_session *se, bool busy)
{
	if (se && atomic_load(&se->other_work) != busy)
		atomic_store(&se->other_work, busy);
}

/* Read a file of the thread in /proc into buf. Opened for each look,
 * so that the guard holds no descriptors while it waits. */
static int read_task_file(pid_t tid, const char *name, char *buf, size_t size)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/task/%d/%s", (int)tid, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n <= 0)
		return -EIO;
	buf[n] = '\0';
	return 0;
}

/* The thread's CPU time and its time spent waiting on a run queue, in
 * ns. The kernel adds a wait only once the thread gets its CPU. */
static int read_schedstat(pid_t tid, uint64_t *exec, uint64_t *delay)
{
	char buf[96];
	unsigned long long run, wait;

	if (read_task_file(tid, "schedstat", buf, sizeof(buf)) ||
	    sscanf(buf, "%llu %llu", &run, &wait) != 2)
		return -EIO;
	*exec = run;
	*delay = wait;
	return 0;
}

/* Whether the thread is running or waiting for its CPU ('R' in stat). */
static bool runnable(pid_t tid)
{
	char buf[512], *end;

	if (read_task_file(tid, "stat", buf, sizeof(buf)))
		return false;
	/* The state follows the name, which may contain ')'. */
	end = strrchr(buf, ')');
	return end && end[1] == ' ' && end[2] == 'R';
}

/* Return a thread at idle priority to its own policy, from the guard. */
static void raise_thread(struct fuse_uring_thread *t, int reason)
{
	if (!atomic_exchange(&t->idle, false))
		return; /* it left by itself */
	atomic_fetch_sub(&t->se->idle_threads, 1);
	if (sched_setscheduler(t->tid, t->policy, &t->sched) < 0)
		log_warn_rl(
		    "FUSE ring queue %u: raising a thread from idle priority failed: %s",
		    t->qid, strerror(errno));
	atomic_store(&t->raised, reason);
}

/*
 * Look at one thread at idle priority. It waited for its CPU when its
 * recorded run queue wait grew by more than GUARD_STARVED_NS. It also
 * waited when it was runnable at two looks in a row and ran for less
 * than GUARD_RAN_NS in between, because a wait is recorded only once it
 * ends.
 */
static void guard_check(struct fuse_uring_thread *t, uint64_t now)
{
	unsigned int gen = atomic_load(&t->idle_gen);
	unsigned int served = atomic_load(&t->served);
	bool ready = runnable(t->tid);
	bool fresh = gen != t->guard_gen;
	uint64_t exec, delay;

	if (read_schedstat(t->tid, &exec, &delay))
		return;
	if (fresh) {
		/* It became idle since the last look: start from here. */
		t->guard_gen = gen;
	} else if (delay - t->guard_run_delay > GUARD_STARVED_NS ||
		   (ready && t->guard_ready &&
		    exec - t->guard_exec < GUARD_RAN_NS)) {
		raise_thread(t, URING_RAISED_STARVED);
	} else if (served == t->guard_served &&
		   now - t->guard_quiet_since > GUARD_QUIET_NS) {
		raise_thread(t, URING_RAISED_QUIET);
	}
	if (fresh || served != t->guard_served)
		t->guard_quiet_since = now;
	t->guard_run_delay = delay;
	t->guard_exec = exec;
	t->guard_ready = ready;
	t->guard_served = served;
}

/*
 * Wait for the next look, or a stop; returns true to go on. The guard
 * sleeps until a thread goes idle only after no thread was idle for
 * GUARD_QUIET_NS, so threads that go idle for one commit at a time
 * rarely need to wake it.
 */
static bool guard_wait(struct fuse_session *se, uint64_t *last_idle)
{
	struct timespec ts = {.tv_nsec = GUARD_PERIOD_NS};
	uint64_t now = now_ns();
	bool go;

	if (atomic_load(&se->idle_threads))
		*last_idle = now;
	pthread_mutex_lock(&se->uring_lock);
	if (now - *last_idle > GUARD_QUIET_NS) {
		atomic_store(&se->guard_waits, true);
		while (!se->guard_stop && atomic_load(&se->idle_threads) == 0)
			pthread_cond_wait(&se->guard_cond, &se->uring_lock);
		atomic_store(&se->guard_waits, false);
		*last_idle = now_ns();
	}
	go = !se->guard_stop;
	pthread_mutex_unlock(&se->uring_lock);
	if (go)
		nanosleep(&ts, NULL);
	return go;
}

static void *guard_main(void *arg)
{
	struct fuse_session *se = arg;
	uint64_t last_idle = 0;
	unsigned int i;

	while (guard_wait(se, &last_idle)) {
		uint64_t now = now_ns();

		for (i = 0; i < se->uring_slots; i++) {
			struct fuse_uring_thread *t = &se->uring[i];

			if (atomic_load(&t->idle))
				guard_check(t, now);
		}
	}
	return NULL;
}

int fuse_uring_guard_start(struct fuse_session *se)
{
	uint64_t exec, delay;
	int err;

	if (!se->uring_handoff || se->guard_started)
		return 0;
	/* Without these files the guard cannot see a waiting thread. */
	se->guard_reads = read_schedstat(gettid(), &exec, &delay) == 0;
	se->guard_stop = false;
	err = pthread_create(&se->guard, NULL, guard_main, se);
	if (err) {
		log_warn(
		    "starting the hand-off guard thread failed: %s; ring threads return to normal priority after each reply",
		    strerror(err));
		return -err;
	}
	pthread_setname_np(se->guard, "lamina-guard");
	se->guard_started = true;
	return 0;
}

void fuse_uring_guard_stop(struct fuse_session *se)
{
	if (!se->guard_started)
		return;
	pthread_mutex_lock(&se->uring_lock);
	se->guard_stop = true;
	pthread_cond_signal(&se->guard_cond);
	pthread_mutex_unlock(&se->uring_lock);
	pthread_join(se->guard, NULL);
	se->guard_started = false;
}
