/* The background jobs' shared state (daemon/jobs*.c; the interface is
 * jobs.h). One struct jobs, four files, one concept each:
 *   jobs.c          the scheduler: a timer per job, arming and re-arming
 *                   on reload, the lifecycle, Status;
 *   jobs_cleanup.c  cleanup runs (regular, batch, deep): a state machine
 *                   of time-capped steps on the loop, queued one at a time;
 *   jobs_checks.c   the security check, the metrics tick with its
 *                   threshold alerts, health and the integrity check;
 *   jobs_probes.c   what watches the loop: the cleanup trigger's poll, the
 *                   loop-lag probe, the loop-turn watch and request timing.
 * Functions shared between them are prefixed jobs_ and declared here;
 * everything else stays static in its file.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "alerts.h"
#include "clock.h"
#include "daemon.h"
#include "events.h"
#include "jobs.h"
#include "metrics.h"
#include "store.h"

#define TRIGGER_POLL_MIN_MS 1000 /* the trigger's first poll, and its shortest interval */

enum job_id {
        JOB_REGULAR,
        JOB_BATCH,
        JOB_DEEP,
        JOB_SECURITY,
        JOB_METRICS,
        JOB_HEALTH,
        _JOB_MAX,
};

static inline bool job_is_cleanup(enum job_id id) {
        return id == JOB_REGULAR || id == JOB_BATCH || id == JOB_DEEP;
}

struct jobs;

struct job {
        struct jobs *owner;
        enum job_id id;
        uv_timer_t timer;
        bool enabled;
        int64_t interval; /* seconds */
        int64_t last_run; /* Unix seconds, 0: never */
        int64_t next_run; /* Unix seconds, 0: not armed */
        uint64_t last_duration_ms;
        uint64_t last_step_max_us; /* cleanup: the longest step of the last run on the loop */
        char last_result[320];
        uint64_t runs;
};

struct jobs_waiter {
        struct jobs_waiter *next;
        jobs_cleanup_fn done;
        void *userdata;
};

enum run_phase {
        PHASE_EXPIRE,   /* end sessions past end + cleanup_grace */
        PHASE_LIMIT,    /* batch: enforce max_concurrent_per_user */
        PHASE_PURGE,    /* deep: retention */
        PHASE_MAINTAIN, /* deep: store_maintain_start(), the heavy part off the loop */
        PHASE_CHECK,    /* deep: the integrity check, in the thread pool */
        PHASE_DONE,
};

struct run {
        enum metrics_cleanup_kind kind;
        const char *reason; /* timer, trigger, manual */
        enum run_phase phase;
        unsigned batches;      /* completed (a batch may span several steps) */
        unsigned in_batch;     /* sessions ended so far in the batch in progress */
        unsigned batch_limit;  /* its batch_size, fixed when it began (a reload may change the setting) */
        unsigned throttled_ms; /* waited in a row for the store to catch up */
        unsigned purge_rows;   /* deep: rows per statement of the next purge step (adapted to PURGE_STEP_NS) */
        unsigned steps;        /* steps that did work on the loop */
        uint64_t step_max_ns;  /* the longest of them */
        uint64_t purge_max_ns, maintain_max_ns; /* deep: the longest purge step, maintenance step */
        unsigned ended, evicted, purged_sessions, purged_audit;
        bool more;            /* regular: stopped at max_batches with sessions left */
        uint64_t maintain_ms; /* deep: the store's maintenance steps */
        unsigned checkpoint_tries;
        bool checkpoint_done; /* the store's maintenance completed */
        bool waiting;         /* paused: the resume timer restarts it */
        int error;
        uint64_t started_ns;
        int64_t started_at;
        struct jobs_waiter *waiters;
};

/* A maintenance step of the deep cleanup off the loop (store_maintain_start). */
struct maintain_req {
        struct jobs *j; /* NULL once the run or the jobs are gone */
        uint64_t started_ns;
};

/* The integrity check in the thread pool (health, deep cleanup). */
struct check_job {
        uv_work_t work;
        struct jobs *j; /* NULL once the jobs are gone */
        bool deep;      /* for the deep cleanup running now, else for health */
        char *path;
        int error;
        struct store_maintenance result;
};

struct jobs {
        struct daemon *d;
        struct job job[_JOB_MAX];
        uv_idle_t step;     /* drives the current cleanup run: one batch per loop iteration */
        uv_timer_t resume;  /* restarts a paused run */
        uv_timer_t trigger; /* the trigger poll */
        uv_timer_t lag;     /* the loop-lag probe */
        unsigned open_handles;
        bool closing;

        struct run *running;
        struct run *queue[_METRICS_CLEANUP_MAX]; /* FIFO */
        size_t n_queue;
        const char *last_cleanup_error; /* static text of the last failed run, NULL: fine */
        char last_cleanup_error_buf[160];

        /* trigger */
        uint64_t awaiting;    /* at the last poll */
        int64_t awaiting_at;  /* when */
        uint64_t poll_ms;     /* current poll interval */
        uint32_t poll_cursor; /* the count in progress: where its next step begins, */
        uint64_t poll_count;  /* what it counted so far, */
        uint64_t poll_ns;     /* and the loop time its steps took */
        double poll_scan_ms;  /* how long the last scan took */

        /* loop lag */
        uint64_t lag_expected_ns;

        /* the loop-turn watch: at the last turn */
        uv_prepare_t turn;
        bool turn_on;
        uint64_t turn_at_ns, turn_idle_ns, turn_cpu_ns;
        long turn_nivcsw, turn_nvcsw;
        uint64_t turn_step_ns; /* the cleanup step's time in this turn */
        uint64_t turn_poll_ns; /* the trigger's count's */

        /* health */
        enum health_status health;
        bool health_known;
        char health_summary[200];
        bool check_known, check_ok;
        char check_message[256];
        int64_t check_at;
        struct check_job *check;
        struct maintain_req *maintain; /* deep cleanup: the step in flight */
        uint64_t commit_failures_seen;
        unsigned suspicious_users;

        struct metrics *metrics;
        struct alerts *alerts;
        struct events *events;
};

extern const char *const jobs_job_names[_JOB_MAX];

static inline int64_t now_s(void) {
        return clock_now();
}

static inline const struct sessiond_config *cfg(const struct jobs *j) {
        return j->d->config;
}

/* jobs.c */
void jobs_handle_closed(uv_handle_t *h);
void jobs_job_done(struct job *job, uint64_t started_ns, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* jobs_cleanup.c */
struct run *jobs_run_queue(struct jobs *j, enum metrics_cleanup_kind kind, const char *reason);
bool jobs_kind_busy(struct jobs *j, enum metrics_cleanup_kind kind);
void jobs_run_step_later(struct jobs *j);
void jobs_run_notify(struct run *r);
void jobs_maintain_detach(struct jobs *j);
void jobs_fire_cleanup(struct jobs *j, struct job *job);

/* jobs_checks.c */
void jobs_alert_set(struct jobs *j, const char *name, bool holds, double value, double threshold, const char *message,
                    int64_t now);
void jobs_fire_security(struct jobs *j, struct job *job);
void jobs_fire_metrics(struct jobs *j, struct job *job);
void jobs_fire_health(struct jobs *j, struct job *job);
int jobs_check_start(struct jobs *j, bool deep);
extern const char *const jobs_threshold_alerts[];

/* jobs_probes.c */
void jobs_trigger_cb(uv_timer_t *t);
void jobs_lag_arm(struct jobs *j);
void jobs_turn_open(struct jobs *j);
void jobs_turn_close(struct jobs *j);
