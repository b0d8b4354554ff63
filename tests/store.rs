//! The store conformance suite: written once, run against every `Store` implementation — SQLite in
//! a temporary file and a real PostgreSQL (a throwaway cluster). Covers every method of the trait:
//! settings, tenants, keys, jobs (idempotency, limits, scoping, pagination and filters), commits
//! (events, ledger, no-op changes, failed changes), spend and usage figures, leases with fencing,
//! and brand markers.

use crate::postgres::PgCluster;
use aiprod::domain::job::{EventKind, Job, JobSpec, LedgerEntry, LedgerKind};
use aiprod::domain::tenant::{ApiKey, KeyMode, Tenant, Trial};
use aiprod::domain::{Backend, JobState, Money, Tier, planner};
use aiprod::error::Error;
use aiprod::events::EventHub;
use aiprod::store::{self, Created, JobFilter, JobLimits, MonthUsage, Store};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

const NO_LIMITS: JobLimits = JobLimits {
    max_active: 1000,
    job_quota: None,
};
const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("conformance.db").display());
    let store = store::connect(&url, Arc::new(EventHub::default()))
        .await
        .unwrap();
    assert_eq!(store.backend_name(), "sqlite");
    conformance(store).await;
}

#[tokio::test]
async fn postgres_store_conforms() {
    let pg = PgCluster::start();
    let store = store::connect(&pg.url, Arc::new(EventHub::default()))
        .await
        .unwrap();
    assert_eq!(store.backend_name(), "postgres");
    conformance(store.clone()).await;
    // A second replica on the same database: the same data, and leases exclude each other.
    let other = store::connect(&pg.url, Arc::new(EventHub::default()))
        .await
        .unwrap();
    replicas_share_one_database(store.clone(), other.clone()).await;
    an_unannounced_commit_reaches_other_replicas(&pg.url, store, other).await;
}

/// A create that claims the new job for its creator: on PostgreSQL the lease comes with the
/// create (one statement); a store that cannot leaves the claim to the caller.
async fn created_and_claimed(s: &dyn Store, acme: &Tenant) {
    let (created, lease) = s
        .create_and_claim(
            job(&acme.id, "claimed-at-create", "quick_social", &[]),
            NO_LIMITS,
            "replica-z",
            LONG,
        )
        .await
        .unwrap();
    let Created::New(j) = created else {
        panic!("a new request id made no new job")
    };
    let Some(lease) = lease else {
        assert_eq!(
            s.backend_name(),
            "sqlite",
            "PostgreSQL claims with the create"
        );
        return;
    };
    assert_eq!(lease.job_id, j.id);
    assert!(
        s.claim("replica-y", &j.id, LONG).await.unwrap().is_none(),
        "the creator holds the new job"
    );
    assert!(
        s.renew("replica-z", LONG)
            .await
            .unwrap()
            .iter()
            .any(|h| h.job_id == j.id && h.token == lease.token)
    );
    // Its driver commits under that lease; ended, the job is given back.
    let (_, ended) = s
        .update_job_fenced(&lease, |job| {
            job.cancel("claimed at create").unwrap();
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(ended.state, JobState::Cancelled);
    assert_eq!(
        s.release("replica-z", &lease).await.unwrap(),
        Some(JobState::Cancelled)
    );
    // A replayed request id is answered with the job, and claims nothing.
    let (again, none) = s
        .create_and_claim(
            job(&acme.id, "claimed-at-create", "quick_social", &[]),
            NO_LIMITS,
            "replica-z",
            LONG,
        )
        .await
        .unwrap();
    assert!(matches!(again, Created::Existing(e) if e.id == j.id) && none.is_none());
}

/// A replica that commits and dies before announcing: the other replicas' watchers still get
/// the commit (their sweep finds it), without anyone announcing it.
async fn an_unannounced_commit_reaches_other_replicas(
    url: &str,
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
) {
    let t = tenant("unannounced", None);
    a.insert_tenant(&t).await.unwrap();
    let j = create(&*a, job(&t.id, "unannounced-1", "quick_social", &[])).await;
    let mut on_b = b.hub().subscribe(&j.id);
    // The announcement of the create (seq 1) may come or not; then a commit nobody announces, as
    // a replica that crashed between its commit and its announcement leaves it.
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::query(
        "WITH e AS (INSERT INTO job_events (job_id, seq, created_at, doc)
             SELECT job_id, 2, now(), jsonb_set(doc::jsonb, '{seq}', '2')::text
             FROM job_events WHERE job_id = $1 AND seq = 1)
         UPDATE jobs SET last_seq = 2 WHERE id = $1",
    )
    .bind(&j.id)
    .execute(&pool)
    .await
    .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), on_b.wait_for(|c| c.up_to >= 2))
        .await
        .expect("replica B's watchers hear of an unannounced commit within a sweep")
        .unwrap()
        .up_to;
    assert_eq!(seen, 2);
    pool.close().await;
}

async fn conformance(s: Arc<dyn Store>) {
    s.ping().await.unwrap();
    settings(&*s).await;
    let (acme, globex) = tenants_and_keys(&*s).await;
    jobs(&*s, &acme, &globex).await;
    commits_events_and_ledger(&*s, &acme).await;
    spend(&*s, &acme, &globex).await;
    limits(&*s).await;
    leases(&*s, &acme).await;
    brand_markers(&*s, &acme, &globex).await;
    concurrent_claims_take_each_job_once(s.clone(), &acme).await;
    concurrent_creates_keep_limits_and_request_ids(s.clone()).await;
    usage_reconciles_with_the_jobs(&*s, &[&acme, &globex]).await;
}

/// The maintained month figures equal the billing rule applied to every job (`bill_totals`),
/// after all the creates, changes and ends above.
async fn usage_reconciles_with_the_jobs(s: &dyn Store, tenants: &[&Tenant]) {
    let month = aiprod::domain::calendar::month_start_ms(aiprod::store::now_ms());
    for t in tenants {
        let jobs = s
            .jobs(&t.id, &JobFilter::default(), None, 1000)
            .await
            .unwrap();
        let totals = aiprod::domain::billing::bill_totals(&jobs);
        let usage = s.month_usage(&t.id, true, month).await.unwrap();
        assert_eq!(
            (
                usage.jobs as usize,
                usage.certified_jobs,
                usage.billed,
                usage.pending,
                usage.delivered_seconds
            ),
            (
                jobs.len(),
                totals.certified_jobs,
                totals.billed,
                totals.pending,
                totals.delivered_seconds
            ),
            "{}",
            t.name
        );
    }
}

fn tenant(name: &str, budget: Option<i64>) -> Tenant {
    Tenant {
        id: format!("ten_{}_{}", name, uuid::Uuid::now_v7().simple()),
        name: name.into(),
        base_tier: Tier::Gold,
        monthly_budget: budget.map(Money::from_micros),
        trial: None,
        job_quota: None,
        created_ms: 1_700_000_000_123,
    }
}

fn job(tenant_id: &str, request_id: &str, preset: &str, labels: &[(&str, &str)]) -> Job {
    let now = aiprod::store::now_ms();
    let mut job = Job {
        id: format!("job_{}", uuid::Uuid::now_v7().simple()),
        tenant_id: tenant_id.into(),
        request_id: request_id.into(),
        fingerprint: "fp".into(),
        sandbox: true,
        state: JobState::Queued,
        quality_floor: 0.6,
        tolerance_percent: 20,
        final_review: false,
        fast_track: true,
        economy: false,
        spec: JobSpec {
            preset_id: preset.into(),
            brief: "a brief".into(),
            brand_id: "brand".into(),
            duration_s: 30,
            aspect_ratio: Default::default(),
            language: "en".into(),
            budget: None,
            auto_approve: true,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        },
        manifest: None,
        quote: None,
        brand_cache_hit: false,
        shots: vec![],
        metered: Money::ZERO,
        billable: Money::ZERO,
        failure: None,
        status_message: String::new(),
        video: None,
        sla_met: None,
        billed: None,
        last_seq: 0,
        created_ms: now,
        updated_ms: now,
        ledger_lines: Some(0),
        pending_events: vec![],
        pending_ledger: vec![],
        dirty: false,
    };
    job.emit(EventKind::StateChanged {
        from: None,
        to: JobState::Queued,
    });
    job
}

async fn create(s: &dyn Store, job: Job) -> Job {
    match s.create_job(job, NO_LIMITS).await.unwrap() {
        Created::New(j) => j,
        Created::Existing(_) => panic!("expected a new job"),
    }
}

fn charge(amount: i64, succeeded: bool) -> LedgerEntry {
    LedgerEntry {
        kind: LedgerKind::Render,
        shot_id: Some("shot_1".into()),
        backend: Some(Backend::Veo),
        seconds: 5,
        amount: Money::from_micros(amount),
        attempt: 1,
        succeeded,
        at_ms: aiprod::store::now_ms(),
        measurement: None,
    }
}

async fn settings(s: &dyn Store) {
    assert_eq!(s.setting("demo").await.unwrap(), None);
    assert!(s.claim_setting("demo", "1").await.unwrap());
    assert!(!s.claim_setting("demo", "2").await.unwrap());
    assert_eq!(s.setting("demo").await.unwrap().as_deref(), Some("1"));
}

async fn tenants_and_keys(s: &dyn Store) -> (Tenant, Tenant) {
    let mut acme = tenant("acme", Some(5_000_000));
    acme.trial = Some(Trial {
        tier: Tier::Platinum,
        end_ms: 1_900_000_000_456,
    });
    acme.job_quota = Some(7);
    let globex = tenant("globex", None);
    s.insert_tenant(&acme).await.unwrap();
    s.insert_tenant(&globex).await.unwrap();
    assert_eq!(s.tenant(&acme.id).await.unwrap().as_ref(), Some(&acme));
    assert_eq!(s.tenant("ten_missing").await.unwrap(), None);
    // A second insert of one id is a conflict, never an INTERNAL error.
    assert!(matches!(
        s.insert_tenant(&acme).await,
        Err(Error::Aborted(_))
    ));

    acme.name = "Acme Corp".into();
    acme.base_tier = Tier::Bronze;
    acme.monthly_budget = Some(Money::from_micros(9_000_000));
    s.update_tenant(&acme).await.unwrap();
    assert_eq!(s.tenant(&acme.id).await.unwrap().as_ref(), Some(&acme));
    assert!(matches!(
        s.update_tenant(&tenant("ghost", None)).await,
        Err(Error::NotFound { .. })
    ));

    // Pagination by id, after a cursor.
    let page = s.tenants("", 1).await.unwrap();
    assert_eq!(page.len(), 1);
    let rest = s.tenants(&page[0].id, 10).await.unwrap();
    let mut ids: Vec<String> = page.iter().chain(&rest).map(|t| t.id.clone()).collect();
    assert_eq!(ids.len(), 2);
    let sorted = {
        let mut v = ids.clone();
        v.sort();
        v
    };
    assert_eq!(ids, sorted);
    ids.sort();

    let key = |name: &str, created_ms: i64| ApiKey {
        id: format!("key_{}", uuid::Uuid::now_v7().simple()),
        tenant_id: acme.id.clone(),
        name: name.into(),
        mode: KeyMode::Test,
        prefix: "aiprod_test_x".into(),
        secret_hash: "hash".into(),
        created_ms,
        expires_ms: Some(2_000_000_000_000),
        revoked_ms: None,
        last_used_ms: None,
    };
    let (k1, k2) = (key("first", 1_000), key("second", 2_000));
    s.insert_key(&k2).await.unwrap();
    s.insert_key(&k1).await.unwrap();
    assert_eq!(s.key(&k1.id).await.unwrap().as_ref(), Some(&k1));
    assert_eq!(s.key("key_missing").await.unwrap(), None);
    let names: Vec<String> = s
        .keys_of(&acme.id)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["first", "second"]);
    assert!(s.keys_of(&globex.id).await.unwrap().is_empty());

    // Revocation keeps the first time; use is recorded at most once a minute.
    let revoked = s.revoke_key(&k1.id, 5_000).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_ms, Some(5_000));
    let again = s.revoke_key(&k1.id, 9_000).await.unwrap().unwrap();
    assert_eq!(again.revoked_ms, Some(5_000));
    assert_eq!(s.revoke_key("key_missing", 1).await.unwrap(), None);
    s.touch_key(&k2.id, 100_000).await.unwrap();
    s.touch_key(&k2.id, 130_000).await.unwrap();
    assert_eq!(
        s.key(&k2.id).await.unwrap().unwrap().last_used_ms,
        Some(100_000)
    );
    s.touch_key(&k2.id, 170_001).await.unwrap();
    assert_eq!(
        s.key(&k2.id).await.unwrap().unwrap().last_used_ms,
        Some(170_001)
    );
    (acme, globex)
}

async fn jobs(s: &dyn Store, acme: &Tenant, globex: &Tenant) {
    let first = create(
        s,
        job(&acme.id, "req-1", "quick_social", &[("team", "red")]),
    )
    .await;
    assert_eq!(first.last_seq, 1);
    assert!(s.request_exists(&acme.id, "req-1").await.unwrap());
    assert!(!s.request_exists(&globex.id, "req-1").await.unwrap());
    // The same request id returns the same job, whatever else the replay carries.
    match s
        .create_job(job(&acme.id, "req-1", "premium_spot", &[]), NO_LIMITS)
        .await
        .unwrap()
    {
        Created::Existing(j) => assert_eq!(j.id, first.id),
        Created::New(_) => panic!("a replayed request id created a second job"),
    }
    let events = s.events_after(&first.id, 0, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].seq, events[0].state), (1, JobState::Queued));

    // Tenant scoping: another tenant's job is simply not there.
    assert_eq!(
        s.job(&acme.id, &first.id).await.unwrap().unwrap().id,
        first.id
    );
    assert_eq!(s.job(&globex.id, &first.id).await.unwrap(), None);
    assert_eq!(
        s.job_progress(&acme.id, &first.id).await.unwrap(),
        Some((JobState::Queued, 1))
    );
    assert_eq!(s.job_progress(&globex.id, &first.id).await.unwrap(), None);
    assert_eq!(s.job_by_id(&first.id).await.unwrap().unwrap().id, first.id);
    assert_eq!(s.job_by_id("job_missing").await.unwrap(), None);

    let second = create(
        s,
        job(&acme.id, "req-2", "brand_campaign", &[("team", "blue")]),
    )
    .await;
    let third = create(
        s,
        job(
            &acme.id,
            "req-3",
            "quick_social",
            &[("team", "blue"), ("env", "prod")],
        ),
    )
    .await;
    create(s, job(&globex.id, "req-1", "quick_social", &[])).await;
    s.update_job(Some(&acme.id), &third.id, |j| {
        j.state = JobState::Cancelled;
        j.emit(EventKind::StateChanged {
            from: Some(JobState::Queued),
            to: JobState::Cancelled,
        });
        Ok(())
    })
    .await
    .unwrap();

    let ids = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    let all = ids(s
        .jobs(&acme.id, &JobFilter::default(), None, 10)
        .await
        .unwrap());
    assert_eq!(
        all,
        [third.id.clone(), second.id.clone(), first.id.clone()],
        "newest first"
    );
    let page1 = ids(s
        .jobs(&acme.id, &JobFilter::default(), None, 2)
        .await
        .unwrap());
    let page2 = ids(s
        .jobs(&acme.id, &JobFilter::default(), Some(&page1[1]), 2)
        .await
        .unwrap());
    assert_eq!([page1, page2].concat(), all);
    let filter = |states: Vec<JobState>, preset: Option<&str>, labels: &[(&str, &str)]| JobFilter {
        states,
        preset_id: preset.map(String::from),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let f = filter(vec![JobState::Queued], None, &[]);
    assert_eq!(
        ids(s.jobs(&acme.id, &f, None, 10).await.unwrap()),
        [second.id.clone(), first.id.clone()]
    );
    let f = filter(vec![], Some("quick_social"), &[]);
    assert_eq!(
        ids(s.jobs(&acme.id, &f, None, 10).await.unwrap()),
        [third.id.clone(), first.id.clone()]
    );
    let f = filter(vec![], None, &[("team", "blue")]);
    assert_eq!(
        ids(s.jobs(&acme.id, &f, None, 10).await.unwrap()),
        [third.id.clone(), second.id.clone()]
    );
    let f = filter(
        vec![JobState::Cancelled],
        Some("quick_social"),
        &[("team", "blue"), ("env", "prod")],
    );
    assert_eq!(
        ids(s.jobs(&acme.id, &f, None, 10).await.unwrap()),
        [third.id]
    );
    let f = filter(vec![], None, &[("team", "green")]);
    assert!(s.jobs(&acme.id, &f, None, 10).await.unwrap().is_empty());

    assert_eq!(s.job_counts(&acme.id).await.unwrap(), (2, 3));
    assert_eq!(s.job_counts(&globex.id).await.unwrap(), (1, 1));
    let month = aiprod::domain::calendar::month_start_ms(aiprod::store::now_ms());
    let usage = s.month_usage(&acme.id, true, month).await.unwrap();
    assert_eq!((usage.jobs, usage.certified_jobs), (3, 1));
    assert_eq!(
        s.month_usage(&acme.id, false, month).await.unwrap(),
        MonthUsage::default(),
        "live and sandbox usage are apart"
    );
    assert_eq!(
        s.month_usage(&acme.id, true, month - 1).await.unwrap(),
        MonthUsage::default(),
        "another month"
    );
}

async fn commits_events_and_ledger(s: &dyn Store, acme: &Tenant) {
    let j = create(s, job(&acme.id, "commit-1", "quick_social", &[])).await;
    let hub = s.hub().clone();
    let mut changed = hub.subscribe(&j.id);

    // A change with events and ledger lines commits them together, numbered after the last.
    let (n, after) = s
        .update_job(None, &j.id, |job| {
            job.move_to(JobState::Planning).unwrap();
            job.charge(charge(250_000, true));
            job.charge(charge(100_000, false));
            Ok(42)
        })
        .await
        .unwrap();
    assert_eq!(n, 42);
    assert_eq!(after.last_seq, 4);
    assert_eq!(after.metered, Money::from_micros(350_000));
    assert_eq!(after.billable, Money::from_micros(250_000));
    changed.changed().await.unwrap();
    let batch = changed.borrow().clone();
    assert_eq!(batch.up_to, 4);
    let handed: Vec<u64> = batch.events.iter().map(|e| e.seq).collect();
    // Handed by the committing writer ([2, 3, 4]), or read once by the notification listener
    // when it hears of the commit first (then with the creation's event, if that was not yet
    // handed either).
    assert!(
        handed.ends_with(&[2, 3, 4]),
        "the commit's events are handed to watchers: {handed:?}"
    );
    let seqs: Vec<u64> = s
        .events_after(&j.id, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    let page: Vec<u64> = s
        .events_after(&j.id, 1, 2)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(page, [2, 3]);
    let ledger = s.ledger(&j.id).await.unwrap();
    assert_eq!(ledger.len(), 2);
    assert_eq!(ledger[0].amount, Money::from_micros(250_000));
    assert!(!ledger[1].succeeded);
    assert_eq!(s.job_by_id(&j.id).await.unwrap().unwrap(), after);

    // A change that changes nothing writes nothing; a failing change writes nothing either.
    let (_, same) = s.update_job(None, &j.id, |_| Ok(())).await.unwrap();
    assert_eq!(same.last_seq, 4);
    let failed = s
        .update_job(None, &j.id, |job| -> aiprod::error::Result<()> {
            job.charge(charge(1, true));
            Err(Error::Aborted("no".into()))
        })
        .await;
    assert!(matches!(failed, Err(Error::Aborted(_))));
    assert_eq!(s.ledger(&j.id).await.unwrap().len(), 2);
    assert_eq!(s.job_by_id(&j.id).await.unwrap().unwrap().last_seq, 4);
    // A document-only change (dirty) is written without an event.
    let (_, dirty) = s
        .update_job(None, &j.id, |job| {
            job.status_message = "noted".into();
            job.dirty = true;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(dirty.last_seq, 4);
    assert_eq!(
        s.job_by_id(&j.id).await.unwrap().unwrap().status_message,
        "noted"
    );

    // Scoped to a tenant: another tenant (or no job) is NotFound and changes nothing.
    assert!(matches!(
        s.update_job(Some("ten_other"), &j.id, |_| Ok(())).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.update_job(None, "job_missing", |_| Ok(())).await,
        Err(Error::NotFound { .. })
    ));
}

async fn spend(s: &dyn Store, acme: &Tenant, globex: &Tenant) {
    // The figures behind monthly budgets and GetUsage (the PostgreSQL numeric-sum regression).
    let since = aiprod::store::now_ms() - 1_000;
    let (billable, metered) = s.spend_since(&acme.id, true, since).await.unwrap();
    assert_eq!(
        (billable, metered),
        (Money::from_micros(250_000), Money::from_micros(350_000))
    );
    // From a month's start the maintained monthly rows answer: the same figures.
    let month = aiprod::domain::calendar::month_start_ms(aiprod::store::now_ms());
    assert_eq!(
        s.spend_since(&acme.id, true, month).await.unwrap(),
        (billable, metered)
    );
    assert_eq!(
        s.spend_since(&acme.id, false, month).await.unwrap(),
        (Money::ZERO, Money::ZERO)
    );
    assert_eq!(
        s.spend_since(&acme.id, false, since).await.unwrap(),
        (Money::ZERO, Money::ZERO),
        "live and sandbox ledgers are apart"
    );
    assert_eq!(
        s.spend_since(&globex.id, true, since).await.unwrap(),
        (Money::ZERO, Money::ZERO)
    );
    assert_eq!(
        s.spend_since(&acme.id, true, aiprod::store::now_ms() + 60_000)
            .await
            .unwrap(),
        (Money::ZERO, Money::ZERO)
    );
}

async fn limits(s: &dyn Store) {
    let t = tenant("limited", None);
    s.insert_tenant(&t).await.unwrap();
    let two_active = JobLimits {
        max_active: 2,
        job_quota: Some(3),
    };
    for r in ["a", "b"] {
        assert!(matches!(
            s.create_job(job(&t.id, r, "quick_social", &[]), two_active)
                .await,
            Ok(Created::New(_))
        ));
    }
    match s
        .create_job(job(&t.id, "c", "quick_social", &[]), two_active)
        .await
    {
        Err(Error::ResourceExhausted {
            subject,
            retry_after,
            ..
        }) => {
            assert!(subject.ends_with("/concurrent_jobs"), "{subject}");
            assert!(retry_after.is_some());
        }
        other => panic!("expected concurrent_jobs exhaustion, got {:?}", other.err()),
    }
    // A replay of an accepted request is answered even at the limit.
    assert!(matches!(
        s.create_job(job(&t.id, "a", "quick_social", &[]), two_active)
            .await,
        Ok(Created::Existing(_))
    ));
    let a = s
        .jobs(&t.id, &JobFilter::default(), None, 10)
        .await
        .unwrap();
    s.update_job(None, &a[0].id, |j| {
        j.state = JobState::Delivered;
        j.dirty = true;
        Ok(())
    })
    .await
    .unwrap();
    assert!(matches!(
        s.create_job(job(&t.id, "c", "quick_social", &[]), two_active)
            .await,
        Ok(Created::New(_))
    ));
    match s
        .create_job(
            job(&t.id, "d", "quick_social", &[]),
            JobLimits {
                max_active: 10,
                job_quota: Some(3),
            },
        )
        .await
    {
        Err(Error::ResourceExhausted {
            subject,
            retry_after,
            ..
        }) => {
            assert!(subject.ends_with("/job_quota"), "{subject}");
            assert!(retry_after.is_none());
        }
        other => panic!("expected job_quota exhaustion, got {:?}", other.err()),
    }
}

/// Creates racing each other: exactly the limit's worth are accepted, and one request id makes
/// one job however many times it is sent at once.
async fn concurrent_creates_keep_limits_and_request_ids(s: Arc<dyn Store>) {
    let t = tenant("racing", None);
    s.insert_tenant(&t).await.unwrap();
    let five = JobLimits {
        max_active: 5,
        job_quota: None,
    };
    let racing = (0..12).map(|i| {
        let (s, tenant_id) = (s.clone(), t.id.clone());
        tokio::spawn(async move {
            s.create_job(
                job(&tenant_id, &format!("race-{i}"), "quick_social", &[]),
                five,
            )
            .await
        })
    });
    let (mut accepted, mut refused) = (0, 0);
    for outcome in futures::future::join_all(racing).await {
        match outcome.unwrap() {
            Ok(Created::New(_)) => accepted += 1,
            Err(Error::ResourceExhausted { subject, .. }) => {
                assert!(subject.ends_with("/concurrent_jobs"), "{subject}");
                refused += 1;
            }
            other => panic!("unexpected outcome: {:?}", other.err()),
        }
    }
    assert_eq!((accepted, refused), (5, 7));
    assert_eq!(s.job_counts(&t.id).await.unwrap(), (5, 5));

    let same = (0..8).map(|_| {
        let (s, tenant_id) = (s.clone(), t.id.clone());
        tokio::spawn(async move {
            s.create_job(job(&tenant_id, "same", "quick_social", &[]), NO_LIMITS)
                .await
        })
    });
    let mut ids = Vec::new();
    let mut new = 0;
    for outcome in futures::future::join_all(same).await {
        match outcome.unwrap().unwrap() {
            Created::New(j) => {
                new += 1;
                ids.push(j.id);
            }
            Created::Existing(j) => ids.push(j.id),
        }
    }
    assert_eq!(new, 1, "one request id makes one job");
    ids.dedup();
    assert_eq!(ids.len(), 1, "every answer is that job: {ids:?}");
    assert_eq!(s.job_counts(&t.id).await.unwrap(), (6, 6));
}

async fn leases(s: &dyn Store, acme: &Tenant) {
    created_and_claimed(s, acme).await;
    // Jobs left runnable by the earlier sections are claimable too: work on a fresh job by id.
    let j = create(s, job(&acme.id, "lease-1", "quick_social", &[])).await;
    let lease = s
        .claim("replica-a", &j.id, LONG)
        .await
        .unwrap()
        .expect("a free runnable job is claimable");
    assert!(
        s.claim("replica-b", &j.id, LONG).await.unwrap().is_none(),
        "a held lease excludes others"
    );
    // The holder's fenced writes apply.
    let (_, after) = s
        .update_job_fenced(&lease, |job| {
            job.move_to(JobState::Planning).unwrap();
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(after.state, JobState::Planning);
    let held = s.renew("replica-a", LONG).await.unwrap();
    let mine = held
        .iter()
        .find(|h| h.job_id == j.id)
        .expect("renewal lists the held job");
    assert_eq!((mine.token, mine.state), (lease.token, JobState::Planning));
    assert!(
        s.renew("replica-b", LONG)
            .await
            .unwrap()
            .iter()
            .all(|h| h.job_id != j.id)
    );

    // Given back, the job goes to the next claimant with a larger token; the old token is fenced off.
    assert_eq!(
        s.release("replica-a", &lease).await.unwrap(),
        Some(JobState::Planning),
        "a release answers the state the job was given back in"
    );
    let taken = s
        .claim("replica-b", &j.id, LONG)
        .await
        .unwrap()
        .expect("a released lease is free");
    assert!(taken.token > lease.token);
    let late = s
        .update_job_fenced(&lease, |job| {
            job.move_to(JobState::Rendering).unwrap();
            Ok(())
        })
        .await;
    assert!(
        matches!(late, Err(Error::LeaseLost)),
        "a stale fencing token changes nothing"
    );
    assert_eq!(
        s.job_by_id(&j.id).await.unwrap().unwrap().state,
        JobState::Planning
    );
    // Releasing with a stale token does not free the new holder's lease.
    assert_eq!(s.release("replica-a", &lease).await.unwrap(), None);
    assert!(s.claim("replica-c", &j.id, LONG).await.unwrap().is_none());

    // An expired lease is rescued by anyone.
    s.release("replica-b", &taken).await.unwrap();
    let short = s
        .claim("replica-b", &j.id, Duration::from_millis(50))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rescued = s
        .claim("replica-c", &j.id, LONG)
        .await
        .unwrap()
        .expect("an expired lease is free");
    assert!(rescued.token > short.token);
    assert!(
        s.renew("replica-b", LONG)
            .await
            .unwrap()
            .iter()
            .all(|h| h.job_id != j.id)
    );

    // A job waiting for the partner (or over) is not claimable; claim_next finds runnable ones only.
    s.update_job_fenced(&rescued, |job| {
        job.state = JobState::AwaitingApproval;
        job.dirty = true;
        Ok(())
    })
    .await
    .unwrap();
    s.release("replica-c", &rescued).await.unwrap();
    assert!(s.claim("replica-d", &j.id, LONG).await.unwrap().is_none());
    let mut claimed = HashSet::new();
    while let Some(l) = s.claim_next("replica-d", LONG).await.unwrap() {
        let state = s.job_by_id(&l.job_id).await.unwrap().unwrap().state;
        assert!(aiprod::store::runnable(state), "{state:?} claimed");
        assert!(claimed.insert(l.job_id), "claim_next returned a held job");
    }
    assert!(!claimed.contains(&j.id));
    assert!(!claimed.is_empty(), "earlier sections left runnable jobs");
    for h in s.renew("replica-d", LONG).await.unwrap() {
        s.release(
            "replica-d",
            &store::Lease {
                job_id: h.job_id,
                token: h.token,
            },
        )
        .await
        .unwrap();
    }
}

async fn brand_markers(s: &dyn Store, acme: &Tenant, globex: &Tenant) {
    let markers = planner::plan_markers("brand-x", "a brief about coffee");
    let now = aiprod::store::now_ms();
    assert!(
        s.brand_markers(&acme.id, "brand-x", now)
            .await
            .unwrap()
            .is_none()
    );
    s.put_brand_markers(&acme.id, "brand-x", &markers, now + 60_000)
        .await
        .unwrap();
    let (got, expires) = s
        .brand_markers(&acme.id, "brand-x", now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got, expires), (markers.clone(), now + 60_000));
    assert!(
        s.brand_markers(&globex.id, "brand-x", now)
            .await
            .unwrap()
            .is_none(),
        "per tenant"
    );
    assert!(
        s.brand_markers(&acme.id, "brand-x", now + 60_001)
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    // Upsert replaces.
    s.put_brand_markers(&acme.id, "brand-x", &markers, now + 120_000)
        .await
        .unwrap();
    assert_eq!(
        s.brand_markers(&acme.id, "brand-x", now)
            .await
            .unwrap()
            .unwrap()
            .1,
        now + 120_000
    );
    assert!(
        s.delete_brand_markers(&acme.id, "brand-x", now)
            .await
            .unwrap()
    );
    assert!(
        !s.delete_brand_markers(&acme.id, "brand-x", now)
            .await
            .unwrap()
    );
    s.put_brand_markers(&acme.id, "brand-y", &markers, now - 1)
        .await
        .unwrap();
    assert!(
        !s.delete_brand_markers(&acme.id, "brand-y", now)
            .await
            .unwrap(),
        "expired markers were not live"
    );
}

/// Two owners race for ten jobs: every job is claimed exactly once.
async fn concurrent_claims_take_each_job_once(s: Arc<dyn Store>, acme: &Tenant) {
    let mut ids = HashSet::new();
    for i in 0..10 {
        ids.insert(
            create(
                &*s,
                job(&acme.id, &format!("race-{i}"), "quick_social", &[]),
            )
            .await
            .id,
        );
    }
    let tasks: Vec<_> = (0..4)
        .map(|n| {
            let s = s.clone();
            tokio::spawn(async move {
                let owner = format!("racer-{}", n % 2);
                let mut got = vec![];
                while let Some(l) = s.claim_next(&owner, LONG).await.unwrap() {
                    got.push(l.job_id);
                }
                got
            })
        })
        .collect();
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<String> = all.iter().cloned().collect();
    assert_eq!(unique.len(), all.len(), "a job was claimed twice");
    assert!(ids.is_subset(&unique));
}

/// Two stores (replicas) on one PostgreSQL: a commit on one wakes the other's watchers through
/// NOTIFY, and a job made runnable on one wakes the other's claim loop.
async fn replicas_share_one_database(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let t = tenant("shared", None);
    a.insert_tenant(&t).await.unwrap();
    assert_eq!(b.tenant(&t.id).await.unwrap().unwrap().id, t.id);
    let j = create(&*a, job(&t.id, "shared-1", "quick_social", &[])).await;
    let mut on_b = b.hub().subscribe(&j.id);
    let woke = tokio::spawn({
        let b = b.clone();
        async move { b.work_available().await }
    });
    a.update_job(None, &j.id, |job| {
        job.move_to(JobState::Planning).unwrap();
        job.state = JobState::AwaitingApproval;
        job.dirty = true;
        Ok(())
    })
    .await
    .unwrap();
    // (B may first hear of the job's creation, seq 1.)
    tokio::time::timeout(Duration::from_secs(5), on_b.wait_for(|c| c.up_to >= 2))
        .await
        .expect("replica B's watchers are woken by A's commit")
        .unwrap();
    // Approval on A makes the job runnable: B's claim loop hears of it.
    a.update_job(Some(&t.id), &j.id, |job| {
        job.state = JobState::Rendering;
        job.dirty = true;
        Ok(())
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), woke)
        .await
        .expect("replica B is told a job became runnable")
        .unwrap();

    // A commit builds on the row as it is, not on a replica's cached copy: B changes the document
    // without an event (nothing is announced, so A's copy is not dropped), then A commits.
    let set = |text: &'static str| {
        move |job: &mut Job| {
            job.status_message = text.into();
            job.dirty = true;
            Ok(())
        }
    };
    a.update_job(None, &j.id, set("from a")).await.unwrap();
    assert_eq!(
        a.job_by_id(&j.id).await.unwrap().unwrap().status_message,
        "from a"
    );
    b.update_job(None, &j.id, set("from b")).await.unwrap();
    let (_, seen_by_a) = a
        .update_job(None, &j.id, |job| {
            let seen = job.status_message.clone();
            job.status_message = format!("{seen}, then a");
            job.dirty = true;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(seen_by_a.status_message, "from b, then a");
    assert_eq!(
        b.job(&t.id, &j.id).await.unwrap().unwrap().status_message,
        "from b, then a"
    );

    // So are a refusal and a change that writes nothing: B moves the job on unannounced, and A's
    // answers are those of B's row, not of A's copy.
    b.update_job(None, &j.id, set("ready")).await.unwrap();
    let (seen, _) = a
        .update_job(None, &j.id, |job| Ok(job.status_message.clone()))
        .await
        .unwrap();
    assert_eq!(seen, "ready", "a no-op change sees the current row");
    b.update_job(None, &j.id, set("ready again")).await.unwrap();
    let (_, accepted) = a
        .update_job(None, &j.id, |job| {
            if job.status_message != "ready again" {
                return Err(Error::Aborted("a stale copy".into()));
            }
            job.status_message = "accepted".into();
            job.dirty = true;
            Ok(())
        })
        .await
        .expect("a change refused on a stale copy is decided again on the current row");
    assert_eq!(accepted.status_message, "accepted");
    assert_eq!(
        b.job(&t.id, &j.id).await.unwrap().unwrap().status_message,
        "accepted"
    );
}

/// The PostgreSQL regression of the scale-out issue, through a real server: a tenant with a monthly
/// budget creates jobs (the budget check sums the ledger) and reads its usage.
#[tokio::test]
async fn a_budgeted_tenant_creates_jobs_and_reads_usage_on_postgres() {
    use crate::harness::*;
    use aiprod_sdk::{Client, pb};
    let pg = PgCluster::start();
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(&dir, 0);
    config.database_url = pg.url.clone();
    let server = TestServer::start_with(config, dir).await;
    let admin = server.admin().await;
    let tenant = admin
        .admin()
        .create_tenant(pb::CreateTenantRequest {
            name: "beta".into(),
            tier: pb::Tier::Gold as i32,
            monthly_budget_micros: Some(50_000_000),
            ..Default::default()
        })
        .await
        .expect("create a budgeted tenant")
        .into_inner()
        .tenant
        .unwrap();
    let key = admin
        .admin()
        .create_api_key(pb::CreateApiKeyRequest {
            tenant_id: tenant.tenant_id,
            mode: pb::ApiKeyMode::Test as i32,
            name: "tests".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let client = Client::connect(server.endpoint.clone(), &key.secret)
        .await
        .unwrap();
    let usage = |client: Client| async move {
        client
            .costs()
            .get_usage(pb::GetUsageRequest {})
            .await
            .expect("GetUsage answers on PostgreSQL")
            .into_inner()
    };
    assert_eq!(usage(client.clone()).await.metered_micros, 0);
    for n in 0..2 {
        let job = create(
            &client,
            pb::CreateJobRequest {
                auto_approve: true,
                ..create_request(&format!("budget-{n}"), "quick_social")
            },
        )
        .await;
        let events = watch_to_end(&client, &job.job_id, 0).await;
        assert_gap_free(&events);
        assert_eq!(states(&events).last(), Some(&pb::JobState::Delivered));
    }
    let after = usage(client.clone()).await;
    assert_eq!(after.jobs, 2);
    assert!(after.metered_micros > 0, "{after:?}");
    assert!(after.budget_used_percent > 0.0, "{after:?}");
}

/// A database written before documents became text (migrations up to 0009: `jsonb` documents,
/// foreign keys to `jobs`) keeps every job, event, ledger line and brand's markers through the
/// upgrade, and takes commits afterwards.
#[tokio::test]
async fn postgres_upgrade_keeps_documents() {
    let pg = PgCluster::start();
    let s = store::connect(&pg.url, Arc::new(EventHub::default()))
        .await
        .unwrap();
    let acme = tenant("upgrade", None);
    s.insert_tenant(&acme).await.unwrap();
    let j = create(
        &*s,
        job(&acme.id, "before-upgrade", "quick_social", &[("k", "v")]),
    )
    .await;
    s.update_job(None, &j.id, |job| {
        job.move_to(JobState::Planning).unwrap();
        job.charge(charge(250_000, true));
        Ok(())
    })
    .await
    .unwrap();
    let markers = planner::plan_markers("brand-u", "a brief about tea");
    let now = aiprod::store::now_ms();
    s.put_brand_markers(&acme.id, "brand-u", &markers, now + 60_000)
        .await
        .unwrap();
    let job_before = s.job(&acme.id, &j.id).await.unwrap().unwrap();
    let events_before = s.events_after(&j.id, 0, 100).await.unwrap();
    let ledger_before = s.ledger(&j.id).await.unwrap();
    s.close().await;

    // Back to the schema of migration 0009, as an older release left it.
    let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
    for statement in [
        "ALTER TABLE jobs ALTER COLUMN doc TYPE jsonb USING doc::jsonb",
        "ALTER TABLE job_events ALTER COLUMN doc TYPE jsonb USING doc::jsonb",
        "ALTER TABLE ledger ALTER COLUMN doc TYPE jsonb USING doc::jsonb",
        "ALTER TABLE brand_markers ALTER COLUMN doc TYPE jsonb USING doc::jsonb",
        "ALTER TABLE jobs RESET (toast_tuple_target)",
        "ALTER TABLE jobs SET (fillfactor = 80)",
        "ALTER TABLE job_events ADD CONSTRAINT job_events_job_id_fkey FOREIGN KEY (job_id) REFERENCES jobs (id)",
        "ALTER TABLE ledger ADD CONSTRAINT ledger_job_id_fkey FOREIGN KEY (job_id) REFERENCES jobs (id)",
        "ALTER TABLE job_labels ADD CONSTRAINT job_labels_job_id_fkey FOREIGN KEY (job_id) REFERENCES jobs (id)",
        "DELETE FROM _sqlx_migrations WHERE version >= 10",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    assert_eq!(doc_type(&pool, &j.id).await, "jsonb");

    // The upgrade: connecting migrates.
    let s = store::connect(&pg.url, Arc::new(EventHub::default()))
        .await
        .unwrap();
    assert_eq!(doc_type(&pool, &j.id).await, "text");
    assert_eq!(s.job(&acme.id, &j.id).await.unwrap().unwrap(), job_before);
    assert_eq!(s.events_after(&j.id, 0, 100).await.unwrap(), events_before);
    assert_eq!(s.ledger(&j.id).await.unwrap(), ledger_before);
    let (got, expires) = s
        .brand_markers(&acme.id, "brand-u", now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got, expires), (markers, now + 60_000));
    // An upgraded job takes commits: its events and ledger continue where they were.
    let (_, after) = s
        .update_job(None, &j.id, |job| {
            job.charge(charge(100_000, true));
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(after.last_seq, job_before.last_seq + 1);
    assert_eq!(
        s.ledger(&j.id).await.unwrap().len(),
        ledger_before.len() + 1
    );
}

/// The column type of a job's stored document.
async fn doc_type(pool: &sqlx::PgPool, job_id: &str) -> String {
    sqlx::query_scalar("SELECT pg_typeof(doc)::text FROM jobs WHERE id = $1")
        .bind(job_id)
        .fetch_one(pool)
        .await
        .unwrap()
}
