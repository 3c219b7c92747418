-- Tables must exist in every DC, with a primary key, before sync starts.
CREATE DATABASE IF NOT EXISTS shop;
CREATE TABLE IF NOT EXISTS shop.users (
  id BIGINT PRIMARY KEY,
  user_id BIGINT NOT NULL,
  name VARCHAR(64)
) ENGINE=InnoDB;
