//! The argon2id verify rate with the service's parameters, as the ceiling for logins.

use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// The service's argon2id cost, from `src/crypto.rs`: 19 MiB of memory, two passes, one lane.
const MEMORY_KIB: u32 = 19_456;
const ITERATIONS: u32 = 2;
const PARALLELISM: u32 = 1;

pub struct Argon2Rate {
    pub threads: usize,
    pub verifications: u64,
    pub elapsed: Duration,
}

impl Argon2Rate {
    pub fn per_second(&self) -> f64 {
        self.verifications as f64 / self.elapsed.as_secs_f64()
    }

    /// Mean time of one verification on one thread, in milliseconds.
    pub fn mean_ms(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1000.0 * self.threads as f64 / self.verifications as f64
    }
}

fn argon2() -> anyhow::Result<Argon2<'static>> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .map_err(|error| anyhow::anyhow!("invalid argon2 parameters: {error}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Verifies one correct password on `threads` threads until `duration` has passed, blocking
/// the caller meanwhile.
pub fn measure_verify_rate(threads: usize, duration: Duration) -> anyhow::Result<Argon2Rate> {
    let password = b"correct horse battery staple";
    let salt = SaltString::generate(&mut OsRng);
    let hash = argon2()?
        .hash_password(password, &salt)
        .map_err(|error| anyhow::anyhow!("argon2 hashing failed: {error}"))?
        .to_string();

    let started = Instant::now();
    let deadline = started + duration;
    let counts: Vec<anyhow::Result<u64>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| scope.spawn(|| verify_until(&hash, password, deadline)))
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("an argon2 thread panicked")))
            })
            .collect()
    });
    let elapsed = started.elapsed();

    let mut verifications = 0;
    for count in counts {
        verifications += count?;
    }
    anyhow::ensure!(verifications > 0, "no argon2 verification finished");
    Ok(Argon2Rate {
        threads,
        verifications,
        elapsed,
    })
}

fn verify_until(hash: &str, password: &[u8], deadline: Instant) -> anyhow::Result<u64> {
    let hasher = argon2()?;
    let parsed = PasswordHash::new(hash)
        .map_err(|error| anyhow::anyhow!("the argon2 hash does not parse: {error}"))?;
    let mut count = 0;
    while Instant::now() < deadline {
        hasher
            .verify_password(password, &parsed)
            .map_err(|error| anyhow::anyhow!("argon2 verification failed: {error}"))?;
        count += 1;
    }
    Ok(count)
}
