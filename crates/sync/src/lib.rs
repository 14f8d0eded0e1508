//! The Tributary sync engine: fetch_stripe_data and the event/webhook appliers.
