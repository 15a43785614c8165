//! A test binary's harness: one shared environment (a test bed), every test
//! run on it in parallel, with libtest's output and exit code.

use anyhow::Result;
use futures::future::BoxFuture;
use libtest_mimic::{Arguments, Trial};
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

/// One test: an async function of the shared environment.
pub type TestFn<E> = for<'a> fn(&'a E) -> BoxFuture<'a, Result<()>>;

/// `tests![a, b]`: the named async test functions, as `(name, TestFn)`.
#[macro_export]
macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|env| Box::pin($name(env))) as $crate::suite::TestFn<_>)),*]
    };
}

/// Lists the tests (`--list`, without setting anything up), or sets the
/// environment up once, runs the tests on it and, when any failed, hands
/// the environment to `on_failure` (to keep its logs) before it is dropped.
pub fn run<E, S, F>(tests: Vec<(&'static str, TestFn<E>)>, setup: S, on_failure: fn(E)) -> ExitCode
where
    E: Send + Sync + 'static,
    S: FnOnce() -> F,
    F: Future<Output = Result<E>>,
{
    run_with(tests, &[], setup, on_failure)
}

/// As [`run`], with the tests named in `alone` run while no other test
/// runs (those that load the machine enough to starve the others' waits).
pub fn run_with<E, S, F>(
    tests: Vec<(&'static str, TestFn<E>)>,
    alone: &[&str],
    setup: S,
    on_failure: fn(E),
) -> ExitCode
where
    E: Send + Sync + 'static,
    S: FnOnce() -> F,
    F: Future<Output = Result<E>>,
{
    let args = Arguments::from_args();
    if args.list {
        let trials = tests
            .iter()
            .map(|(name, _)| Trial::test(*name, || Ok(())))
            .collect();
        return libtest_mimic::run(&args, trials).exit_code();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("no tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = match runtime.block_on(setup()) {
        Ok(env) => Arc::new(env),
        Err(e) => {
            eprintln!("the test bed did not start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let handle = runtime.handle().clone();
    let turns = Arc::new(tokio::sync::RwLock::new(()));
    let trials = tests
        .into_iter()
        .map(|(name, test)| {
            let (env, handle, turns) = (env.clone(), handle.clone(), turns.clone());
            let exclusive = alone.contains(&name);
            Trial::test(name, move || {
                handle
                    .block_on(async {
                        // Held for the whole test: shared by the others,
                        // exclusive for one that must run alone.
                        let (_shared, _exclusive) = if exclusive {
                            (None, Some(turns.write().await))
                        } else {
                            (Some(turns.read().await), None)
                        };
                        test(&env).await
                    })
                    .map_err(|e| format!("{e:#}").into())
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // The trials are gone; this is the last reference.
    if let (true, Ok(env)) = (conclusion.has_failed(), Arc::try_unwrap(env)) {
        on_failure(env);
    }
    conclusion.exit_code()
}
