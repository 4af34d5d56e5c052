/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Minimal check macros for lamina's unit tests. A failed check prints one
 * line with file:line, the running test, the expression and the values,
 * then the test goes on. check_summary() prints the totals and returns
 * the exit status for main(): 0 when every check passed, 1 otherwise.
 *
 *	int main(void)
 *	{
 *		RUN_TEST(test_something);
 *		return check_summary();
 *	}
 */
#ifndef LAMINA_TEST_CHECK_H
#define LAMINA_TEST_CHECK_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static unsigned long check_total;
static unsigned long check_failed;
static const char *check_test_name = "(no test)";

static inline bool check_report(bool ok, const char *file, int line,
				const char *what)
{
	check_total++;
	if (ok)
		return true;
	check_failed++;
	fprintf(stderr, "%s:%d: %s: check failed: %s\n", file, line,
		check_test_name, what);
	return false;
}

static inline bool check_true(bool ok, const char *expr, const char *file,
			      int line)
{
	return check_report(ok, file, line, expr);
}

static inline bool check_eq_int(long long actual, long long expected,
				const char *actual_expr,
				const char *expected_expr, const char *file,
				int line)
{
	char what[512];

	if (actual == expected)
		return check_report(true, file, line, NULL);
	snprintf(what, sizeof(what),
		 "%s == %s: got %lld (%#llx), expected %lld (%#llx)",
		 actual_expr, expected_expr, actual, (unsigned long long)actual,
		 expected, (unsigned long long)expected);
	return check_report(false, file, line, what);
}

static inline bool check_eq_ptr(const void *actual, const void *expected,
				const char *actual_expr,
				const char *expected_expr, const char *file,
				int line)
{
	char what[512];

	if (actual == expected)
		return check_report(true, file, line, NULL);
	snprintf(what, sizeof(what), "%s == %s: got %p, expected %p",
		 actual_expr, expected_expr, actual, expected);
	return check_report(false, file, line, what);
}

static inline bool check_eq_str(const char *actual, const char *expected,
				const char *actual_expr,
				const char *expected_expr, const char *file,
				int line)
{
	char what[1024];

	if (actual && expected && !strcmp(actual, expected))
		return check_report(true, file, line, NULL);
	if (!actual && !expected)
		return check_report(true, file, line, NULL);
	snprintf(what, sizeof(what), "%s == %s: got %s%s%s, expected %s%s%s",
		 actual_expr, expected_expr, actual ? "\"" : "",
		 actual ? actual : "NULL", actual ? "\"" : "",
		 expected ? "\"" : "", expected ? expected : "NULL",
		 expected ? "\"" : "");
	return check_report(false, file, line, what);
}

static inline bool check_contains(const char *haystack, const char *needle,
				  const char *haystack_expr, const char *file,
				  int line)
{
	char what[1536];

	if (haystack && strstr(haystack, needle))
		return check_report(true, file, line, NULL);
	snprintf(what, sizeof(what), "%s contains \"%s\": got %s%s%s",
		 haystack_expr, needle, haystack ? "\"" : "",
		 haystack ? haystack : "NULL", haystack ? "\"" : "");
	return check_report(false, file, line, what);
}

/* Each macro evaluates its arguments once and returns whether it passed. */
#define CHECK(cond) check_true((cond), #cond, __FILE__, __LINE__)
#define CHECK_EQ_INT(actual, expected)                                         \
	check_eq_int((long long)(actual), (long long)(expected), #actual,      \
		     #expected, __FILE__, __LINE__)
#define CHECK_EQ_PTR(actual, expected)                                         \
	check_eq_ptr((const void *)(actual), (const void *)(expected),         \
		     #actual, #expected, __FILE__, __LINE__)
#define CHECK_EQ_STR(actual, expected)                                         \
	check_eq_str((actual), (expected), #actual, #expected, __FILE__,       \
		     __LINE__)
#define CHECK_CONTAINS(haystack, needle)                                       \
	check_contains((haystack), (needle), #haystack, __FILE__, __LINE__)

/* Run one test function, naming it in the failures it reports. */
#define RUN_TEST(fn)                                                           \
	do {                                                                   \
		unsigned long failed_before_ = check_failed;                   \
		check_test_name = #fn;                                         \
		fn();                                                          \
		printf("%s %s\n",                                              \
		       check_failed == failed_before_ ? "ok  " : "FAIL", #fn); \
		fflush(stdout);                                                \
	} while (0)

static inline int check_summary(void)
{
	printf("%lu checks, %lu failed\n", check_total, check_failed);
	return check_failed ? 1 : 0;
}

#endif
