-- recbot schema for MySQL / MariaDB, for a DBA who creates the tables by hand.
--
-- It builds exactly what `python -m bot migrate` builds (tests/test_schema.py checks that on MariaDB),
-- and records the migration it equals in alembic_version, so `migrate` and `serve` start from there.
-- Create the database first:
--   CREATE DATABASE records CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
-- then: mysql records < schema.sql
--
-- Not here: the optional Mroonga search table T_CONTENT_FT. It is a derived index that the bot
-- creates and fills on start when the Mroonga engine is installed; without it search uses LIKE.

CREATE TABLE `alembic_version` (
  `version_num` varchar(32) NOT NULL,
  PRIMARY KEY (`version_num`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `T_USER` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `mm_user_id` varchar(64) NOT NULL,
  `username` varchar(64) NOT NULL,
  `role` varchar(16) NOT NULL DEFAULT 'member',
  `created_at` datetime(6) NOT NULL,
  `updated_at` datetime(6) NOT NULL,
  `locale` varchar(16) DEFAULT NULL,
  `timezone` varchar(64) DEFAULT NULL,
  `profile_at` datetime(6) DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `mm_user_id` (`mm_user_id`),
  KEY `ix_T_USER_username` (`username`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `T_CONTENT` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `owner_id` bigint(20) NOT NULL,
  `body` mediumtext NOT NULL,
  `search_text` mediumtext CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `created_at` datetime(6) NOT NULL,
  `updated_at` datetime(6) NOT NULL,
  `deleted_at` datetime(6) DEFAULT NULL,
  `deleted_by` bigint(20) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `ix_content_owner_id` (`owner_id`,`id`),
  KEY `ix_content_created` (`created_at`),
  FOREIGN KEY (`owner_id`) REFERENCES `T_USER` (`id`),
  FOREIGN KEY (`deleted_by`) REFERENCES `T_USER` (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `T_TAG` (
  `record_id` bigint(20) NOT NULL,
  `tag` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  PRIMARY KEY (`record_id`,`tag`),
  KEY `ix_tag_tag_record` (`tag`,`record_id`),
  FOREIGN KEY (`record_id`) REFERENCES `T_CONTENT` (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `T_GRANT` (
  `viewer_id` bigint(20) NOT NULL,
  `owner_id` bigint(20) NOT NULL,
  `granted_by` bigint(20) DEFAULT NULL,
  `created_at` datetime(6) NOT NULL,
  PRIMARY KEY (`viewer_id`,`owner_id`),
  KEY `ix_grant_owner` (`owner_id`),
  FOREIGN KEY (`viewer_id`) REFERENCES `T_USER` (`id`),
  FOREIGN KEY (`owner_id`) REFERENCES `T_USER` (`id`),
  FOREIGN KEY (`granted_by`) REFERENCES `T_USER` (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `T_SHARE` (
  `user_id` bigint(20) NOT NULL,
  `record_id` bigint(20) NOT NULL,
  `shared_by` bigint(20) NOT NULL,
  `created_at` datetime(6) NOT NULL,
  PRIMARY KEY (`user_id`,`record_id`),
  KEY `ix_share_record` (`record_id`),
  FOREIGN KEY (`user_id`) REFERENCES `T_USER` (`id`),
  FOREIGN KEY (`record_id`) REFERENCES `T_CONTENT` (`id`),
  FOREIGN KEY (`shared_by`) REFERENCES `T_USER` (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `T_REVISION` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `record_id` bigint(20) NOT NULL,
  `body` mediumtext NOT NULL,
  `edited_by` bigint(20) NOT NULL,
  `edited_at` datetime(6) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `ix_revision_record` (`record_id`,`id`),
  FOREIGN KEY (`record_id`) REFERENCES `T_CONTENT` (`id`),
  FOREIGN KEY (`edited_by`) REFERENCES `T_USER` (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `T_SETTING` (
  `name` varchar(64) NOT NULL,
  `value` text NOT NULL,
  `updated_by` bigint(20) DEFAULT NULL,
  `updated_at` datetime(6) NOT NULL,
  PRIMARY KEY (`name`),
  FOREIGN KEY (`updated_by`) REFERENCES `T_USER` (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `T_AUDIT` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `actor_id` bigint(20) DEFAULT NULL,
  `action` varchar(64) NOT NULL,
  `detail` text NOT NULL,
  `created_at` datetime(6) NOT NULL,
  PRIMARY KEY (`id`),
  FOREIGN KEY (`actor_id`) REFERENCES `T_USER` (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `T_FILE` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `record_id` bigint(20) NOT NULL,
  `mm_file_id` varchar(64) NOT NULL,
  `name` varchar(255) NOT NULL,
  `size` bigint(20) NOT NULL,
  `mime_type` varchar(128) NOT NULL,
  `created_at` datetime(6) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `ix_file_record` (`record_id`),
  FOREIGN KEY (`record_id`) REFERENCES `T_CONTENT` (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `T_ALERT_STATE` (
  `host` varchar(128) NOT NULL,
  `path` varchar(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `kind` varchar(16) NOT NULL,
  `level` varchar(16) NOT NULL,
  `posted_level` varchar(16) DEFAULT NULL,
  `last_post_at` datetime(6) DEFAULT NULL,
  `acknowledged` tinyint(1) NOT NULL,
  `snoozed_until` datetime(6) DEFAULT NULL,
  `updated_at` datetime(6) NOT NULL,
  `episode` bigint(20) NOT NULL DEFAULT 0,
  PRIMARY KEY (`host`,`path`,`kind`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `T_SAMPLE` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `host` varchar(128) NOT NULL,
  `path` varchar(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `at` datetime(6) NOT NULL,
  `used_percent` double NOT NULL,
  `total_bytes` bigint(20) NOT NULL,
  `used_bytes` bigint(20) NOT NULL,
  `free_bytes` bigint(20) NOT NULL,
  `inodes_total` bigint(20) NOT NULL,
  `inodes_used` bigint(20) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `ix_sample_host_path_at` (`host`,`path`,`at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `T_OUTBOX` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `host` varchar(128) NOT NULL,
  `path` varchar(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `kind` varchar(16) NOT NULL,
  `level` varchar(16) NOT NULL,
  `message` text NOT NULL,
  `chart` mediumblob DEFAULT NULL,
  `created_at` datetime(6) NOT NULL,
  `attempts` int(11) NOT NULL,
  `next_attempt_at` datetime(6) NOT NULL,
  `sent_at` datetime(6) DEFAULT NULL,
  `post_id` varchar(64) DEFAULT NULL,
  `last_error` text DEFAULT NULL,
  `episode` bigint(20) NOT NULL DEFAULT 0,
  `post_key` varchar(32) DEFAULT NULL,
  `file_id` varchar(64) DEFAULT NULL,
  `set_aside_at` datetime(6) DEFAULT NULL,
  `target_user` varchar(64) DEFAULT NULL,
  `dedup_key` varchar(128) DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `ux_outbox_dedup` (`dedup_key`),
  KEY `ix_outbox_pending` (`host`,`sent_at`,`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `T_ALERT_HEALTH` (
  `host` varchar(128) NOT NULL,
  `last_check_at` datetime(6) NOT NULL,
  `last_ok_at` datetime(6) DEFAULT NULL,
  `last_error` text DEFAULT NULL,
  `failures` int(11) NOT NULL,
  `failing_posted` tinyint(1) NOT NULL,
  PRIMARY KEY (`host`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `T_LEASE` (
  `name` varchar(255) NOT NULL,
  `holder` varchar(255) NOT NULL,
  `expires_at` datetime(6) NOT NULL,
  `fencing` bigint(20) NOT NULL,
  PRIMARY KEY (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE `T_DIGEST` (
  `user_id` bigint(20) NOT NULL,
  `period` varchar(8) NOT NULL,
  `tag` varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL,
  `owner_id` bigint(20) DEFAULT NULL,
  `zone` varchar(64) NOT NULL,
  `sent_until` datetime(6) NOT NULL,
  `created_at` datetime(6) NOT NULL,
  `updated_at` datetime(6) NOT NULL,
  PRIMARY KEY (`user_id`),
  FOREIGN KEY (`user_id`) REFERENCES `T_USER` (`id`),
  FOREIGN KEY (`owner_id`) REFERENCES `T_USER` (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

INSERT INTO alembic_version (version_num) VALUES ('0007');
