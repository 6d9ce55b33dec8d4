"""The bus between services: Apache Kafka when distributed, a durable table log when embedded."""
