//! Kafka: the CloudEvents envelope, the reply/trigger consumer, the outbox relay.

pub mod consumer;
pub mod envelope;
pub mod kafka;
pub mod membership;
pub mod outbox_batch;
pub mod relay;
pub mod reply_token;
