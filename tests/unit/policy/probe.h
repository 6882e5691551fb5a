/*
 * probe.h: `Probe`, a plugin type for the unit tests of the policy core. Each option makes the
 * step do one observable thing (return an action, fail, wait, score, set a session value, run
 * its sub-chain...), so a configuration spells out the scenario a test checks. Registered with
 * pol_server_register_type by probe_register().
 */
#ifndef TESTS_POLICY_PROBE_H
#define TESTS_POLICY_PROBE_H

#include "pol/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Registers Probe once per process. */
void probe_register(void);

/* The request of the last Probe that returned POL_WAIT (wait = 1), and how many steps it was
 * given so far. */
extern struct pol_req *probe_waiting;
/* Names of the plugins whose cron ran, space separated, and the task list they got. */
extern char probe_cron_log[1024];

#ifdef __cplusplus
}
#endif

#endif
