-- pgsweeper capture: every session the rules read, as one JSON object
-- (pgsweeper(8), REPLAY), for a host where pgsweeper is not installed:
--
--   psql -XAt -v server=NAME -f capture.sql "CONNINFO" > capture.json
--
-- NAME is the server's name in the configuration whose rules will judge
-- it; then, anywhere: pgsweeper --explain --from capture.json. It only
-- reads (pg_stat_activity, pg_locks, pg_roles, pg_database,
-- pg_prepared_xacts, pg_replication_slots); run it as a role with
-- pg_monitor (or a superuser) to see every session and its query, as
-- pgsweeper's role does. Like pgsweeper's, its statement gives
-- up after 5 s. The capture holds query texts: keep it as you would the
-- server's logs.
--
-- Generated from pgsweeper's own statement (src/sql.c); do not edit.
\set QUIET on
\set ON_ERROR_STOP on
SET statement_timeout = '5s';
\if :{?server}
\else
DO $$BEGIN RAISE EXCEPTION 'capture.sql needs the server''s name: psql -XAt -v server=NAME -f capture.sql'; END$$;
\endif
SELECT current_setting('server_version_num')::int >= 140000 AS pgsweeper_waitstart \gset
\if :pgsweeper_waitstart
PREPARE pgsweeper_capture AS
  SELECT json_build_object('pgsweeper_capture', 1, 'server', $20::text, 'server_version', current_setting('server_version'),
  'now', to_char(timestamp 'epoch' + (max(s.now_us)) * interval '1 microsecond', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
  'role', CASE WHEN bool_or(s.in_recovery) THEN 'standby' ELSE 'primary' END, 'current_user', current_user,
  'connections', sum(s.n), 'connection_slots', max(s.slots), 'groups', coalesce(json_agg(json_build_object('user',
  s.rolname, 'database', s.datname, 'application', s.app, 'client_addr', s.addr, 'count', s.n) ORDER
  BY s.rolname, s.datname, s.app, s.addr) FILTER (WHERE s.n > 0), '[]'), 'sessions', coalesce(json_agg(json_build_object('pid',
  s.pid, 'backend_type', s.backend_type, 'superuser', s.super, 'state', s.state, 'backend_start', to_char(timestamp
  'epoch' + (s.bs) * interval '1 microsecond', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'state_change', to_char(timestamp
  'epoch' + (s.sc) * interval '1 microsecond', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'query_start', to_char(timestamp
  'epoch' + (s.qs) * interval '1 microsecond', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'xact_start', to_char(timestamp
  'epoch' + (s.xs) * interval '1 microsecond', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'wait_start', to_char(timestamp
  'epoch' + (s.wait_start) * interval '1 microsecond', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'user', s.rolname,
  'database', s.datname, 'application', s.app, 'client_addr', s.addr, 'wait_event_type', s.wait_event_type,
  'blocking_pids', s.blockers, 'xmin_age', s.xmin_age, 'query', s.query) ORDER BY s.pid) FILTER (WHERE
  s.pid IS NOT NULL), '[]'), 'holders', coalesce(json_agg(json_build_object('holder', s.holder, 'name',
  s.app, 'owner', s.rolname, 'database', s.datname, 'slot_type', s.addr, 'active', s.lock_wait, 'prepared_at',
  to_char(timestamp 'epoch' + (s.bs) * interval '1 microsecond', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'xmin_age',
  s.xmin_age) ORDER BY s.holder, s.app) FILTER (WHERE s.holder IS NOT NULL), '[]')) FROM (WITH w AS MATERIALIZED
  (SELECT coalesce(a.leader_pid, a.pid) AS pid, a.pid AS waiter, pg_blocking_pids(a.pid) AS blockers,
  a.query_start FROM pg_stat_get_activity(NULL) a WHERE a.wait_event_type = 'Lock' AND a.pid <> pg_backend_pid()),
  lk AS MATERIALIZED (SELECT l.pid, l.granted, l.waitstart AS waitstart, ROW(l.locktype, l.database,
  l.relation, l.page, l.tuple, l.virtualxid, l.transactionid, l.classid, l.objid, l.objsubid)::text AS
  tag FROM pg_locks l WHERE l.pid IS NOT NULL), ls AS (SELECT pid, min(waitstart) AS waitstart FROM lk
  WHERE NOT granted GROUP BY pid), lg AS (SELECT w.pid, CASE WHEN count(*) = 1 THEN min(w.blockers) ELSE
  ARRAY(SELECT b.b FROM w x, unnest(x.blockers) b(b) WHERE x.pid = w.pid AND b.b <> w.pid) END AS blockers,
  coalesce(min(ls.waitstart), now()) AS wait_start FROM w LEFT JOIN ls ON ls.pid = w.waiter GROUP BY
  w.pid), ids AS (SELECT pid FROM lg UNION SELECT coalesce(x.leader_pid, h.pid) FROM lk h LEFT JOIN pg_stat_get_activity(NULL)
  x ON x.pid = h.pid WHERE h.granted AND h.tag IN (SELECT tag FROM lk WHERE NOT granted)), k AS MATERIALIZED
  (SELECT CASE WHEN $11::bool THEN a.usesysid END AS u, CASE WHEN $12::bool THEN a.datid END AS d, CASE
  WHEN $13::bool THEN a.application_name END AS app, CASE WHEN $14::bool THEN CASE WHEN a.client_port
  = -1 THEN 'local' ELSE host(a.client_addr) END END AS addr, count(*) FILTER (WHERE a.backend_type =
  'client backend') AS n, max(greatest(age(a.backend_xmin), age(a.backend_xid))) FILTER (WHERE $10::int8
  IS NOT NULL AND a.pid <> pg_backend_pid()) AS hz, array_agg(a.pid) FILTER (WHERE a.pid <> pg_backend_pid()
  AND ( (a.backend_type = 'client backend' AND ((a.state = 'idle' AND a.state_change <= (SELECT now()
  - $2::int8 * interval '1 millisecond')) OR (a.state IN ('idle in transaction', 'idle in transaction (aborted)')
  AND a.state_change <= (SELECT now() - $3::int8 * interval '1 millisecond')) OR (a.state IN ('active',
  'fastpath function call') AND a.query_start <= (SELECT now() - $4::int8 * interval '1 millisecond'))
  OR a.xact_start <= (SELECT now() - $5::int8 * interval '1 millisecond') OR a.backend_start <= (SELECT
  now() - $6::int8 * interval '1 millisecond') OR ($10::int8 IS NOT NULL AND greatest(age(a.backend_xmin),
  age(a.backend_xid)) >= $10::int8) OR a.pid = ANY($7::int4[]) OR (($15::bool OR $16::text[] IS NOT NULL
  OR $17::text[] IS NOT NULL OR $18::text[] IS NOT NULL OR $19::text[] IS NOT NULL) AND a.state = 'idle'
  AND ($15::bool OR a.usesysid IN (SELECT oid FROM pg_roles WHERE rolname = ANY($16::text[])) OR a.datid
  IN (SELECT oid FROM pg_database WHERE datname = ANY($17::text[])) OR a.application_name = ANY($18::text[])
  OR CASE WHEN a.client_port = -1 THEN 'local' ELSE host(a.client_addr) END = ANY($19::text[])))) IS
  TRUE AND ($8::bool OR a.usesysid NOT IN (SELECT oid FROM pg_roles WHERE rolsuper))) OR ($9::bool AND
  a.wait_event_type = 'Lock') OR a.pid IN (SELECT pid FROM ids))) AS pids FROM pg_stat_get_activity(NULL)
  a GROUP BY 1, 2, 3, 4) SELECT c.pid, c.client, c.super, c.state, c.bs, c.sc, c.qs, c.xs, c.rolname,
  c.datname, c.app, c.addr, c.query, (extract(epoch FROM now()) * 1000000)::int8 AS now_us, c.xmin_age,
  c.lock_wait, pg_is_in_recovery() AS in_recovery, c.blockers, c.wait_start, c.n, g.slots, c.holder ,
  c.backend_type, c.wait_event_type FROM (SELECT current_setting('max_connections')::int4 - current_setting('superuser_reserved_connections')::int4
  - coalesce(current_setting('reserved_connections', true)::int4, 0) AS slots) g LEFT JOIN (SELECT a.pid,
  a.backend_type = 'client backend' AS client, coalesce(r.rolsuper, false) AS super, a.state, (extract(epoch
  FROM a.backend_start) * 1000000)::int8 AS bs, (extract(epoch FROM a.state_change) * 1000000)::int8
  AS sc, (extract(epoch FROM a.query_start) * 1000000)::int8 AS qs, (extract(epoch FROM a.xact_start)
  * 1000000)::int8 AS xs, r.rolname, d.datname, a.application_name AS app, CASE WHEN a.client_port =
  -1 THEN 'local' ELSE host(a.client_addr) END AS addr, CASE WHEN $1::bool THEN left(a.query, 1024) END
  AS query, greatest(age(a.backend_xmin), age(a.backend_xid)) AS xmin_age, coalesce(a.wait_event_type
  = 'Lock', false) AS lock_wait, lg.blockers, (extract(epoch FROM lg.wait_start) * 1000000)::int8 AS
  wait_start, NULL::int8 AS n, a.backend_type, a.wait_event_type, NULL::text AS holder FROM k CROSS JOIN
  LATERAL unnest(k.pids) p(pid) CROSS JOIN LATERAL pg_stat_get_activity(p.pid) a LEFT JOIN pg_roles r
  ON r.oid = a.usesysid LEFT JOIN pg_database d ON d.oid = a.datid LEFT JOIN lg ON lg.pid = a.pid UNION
  ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, CASE WHEN $11::bool THEN coalesce(r.rolname,
  '') END, CASE WHEN $12::bool THEN coalesce(d.datname, '') END, CASE WHEN $13::bool THEN coalesce(k.app,
  '') END, CASE WHEN $14::bool THEN coalesce(k.addr, '') END, NULL, k.hz, NULL, NULL, NULL, k.n, NULL,
  NULL, NULL FROM k LEFT JOIN pg_roles r ON r.oid = k.u LEFT JOIN pg_database d ON d.oid = k.d WHERE
  k.n > 0 OR k.hz IS NOT NULL UNION ALL SELECT NULL, NULL, NULL, NULL, (extract(epoch FROM p.prepared)
  * 1000000)::int8, NULL, NULL, NULL, p.owner::text, p.database::text, p.gid, NULL, NULL, age(p.transaction),
  NULL, NULL, NULL, NULL, NULL, NULL, 'prepared' FROM pg_prepared_xacts p WHERE $10::int8 IS NOT NULL
  UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, l.database::text, l.slot_name::text,
  l.slot_type, NULL, greatest(age(l.xmin), age(l.catalog_xmin)), l.active, NULL, NULL, NULL, NULL, NULL,
  'slot' FROM pg_replication_slots l WHERE $10::int8 IS NOT NULL AND (l.xmin IS NOT NULL OR l.catalog_xmin
  IS NOT NULL)) c ON true) s;
\else
PREPARE pgsweeper_capture AS
  SELECT json_build_object('pgsweeper_capture', 1, 'server', $20::text, 'server_version', current_setting('server_version'),
  'now', to_char(timestamp 'epoch' + (max(s.now_us)) * interval '1 microsecond', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
  'role', CASE WHEN bool_or(s.in_recovery) THEN 'standby' ELSE 'primary' END, 'current_user', current_user,
  'connections', sum(s.n), 'connection_slots', max(s.slots), 'groups', coalesce(json_agg(json_build_object('user',
  s.rolname, 'database', s.datname, 'application', s.app, 'client_addr', s.addr, 'count', s.n) ORDER
  BY s.rolname, s.datname, s.app, s.addr) FILTER (WHERE s.n > 0), '[]'), 'sessions', coalesce(json_agg(json_build_object('pid',
  s.pid, 'backend_type', s.backend_type, 'superuser', s.super, 'state', s.state, 'backend_start', to_char(timestamp
  'epoch' + (s.bs) * interval '1 microsecond', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'state_change', to_char(timestamp
  'epoch' + (s.sc) * interval '1 microsecond', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'query_start', to_char(timestamp
  'epoch' + (s.qs) * interval '1 microsecond', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'xact_start', to_char(timestamp
  'epoch' + (s.xs) * interval '1 microsecond', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'wait_start', to_char(timestamp
  'epoch' + (s.wait_start) * interval '1 microsecond', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'user', s.rolname,
  'database', s.datname, 'application', s.app, 'client_addr', s.addr, 'wait_event_type', s.wait_event_type,
  'blocking_pids', s.blockers, 'xmin_age', s.xmin_age, 'query', s.query) ORDER BY s.pid) FILTER (WHERE
  s.pid IS NOT NULL), '[]'), 'holders', coalesce(json_agg(json_build_object('holder', s.holder, 'name',
  s.app, 'owner', s.rolname, 'database', s.datname, 'slot_type', s.addr, 'active', s.lock_wait, 'prepared_at',
  to_char(timestamp 'epoch' + (s.bs) * interval '1 microsecond', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'xmin_age',
  s.xmin_age) ORDER BY s.holder, s.app) FILTER (WHERE s.holder IS NOT NULL), '[]')) FROM (WITH w AS MATERIALIZED
  (SELECT coalesce(a.leader_pid, a.pid) AS pid, a.pid AS waiter, pg_blocking_pids(a.pid) AS blockers,
  a.query_start FROM pg_stat_get_activity(NULL) a WHERE a.wait_event_type = 'Lock' AND a.pid <> pg_backend_pid()),
  lk AS MATERIALIZED (SELECT l.pid, l.granted, NULL::timestamptz AS waitstart, ROW(l.locktype, l.database,
  l.relation, l.page, l.tuple, l.virtualxid, l.transactionid, l.classid, l.objid, l.objsubid)::text AS
  tag FROM pg_locks l WHERE l.pid IS NOT NULL), ls AS (SELECT pid, min(waitstart) AS waitstart FROM lk
  WHERE NOT granted GROUP BY pid), lg AS (SELECT w.pid, CASE WHEN count(*) = 1 THEN min(w.blockers) ELSE
  ARRAY(SELECT b.b FROM w x, unnest(x.blockers) b(b) WHERE x.pid = w.pid AND b.b <> w.pid) END AS blockers,
  coalesce(min(w.query_start), now()) AS wait_start FROM w LEFT JOIN ls ON ls.pid = w.waiter GROUP BY
  w.pid), ids AS (SELECT pid FROM lg UNION SELECT coalesce(x.leader_pid, h.pid) FROM lk h LEFT JOIN pg_stat_get_activity(NULL)
  x ON x.pid = h.pid WHERE h.granted AND h.tag IN (SELECT tag FROM lk WHERE NOT granted)), k AS MATERIALIZED
  (SELECT CASE WHEN $11::bool THEN a.usesysid END AS u, CASE WHEN $12::bool THEN a.datid END AS d, CASE
  WHEN $13::bool THEN a.application_name END AS app, CASE WHEN $14::bool THEN CASE WHEN a.client_port
  = -1 THEN 'local' ELSE host(a.client_addr) END END AS addr, count(*) FILTER (WHERE a.backend_type =
  'client backend') AS n, max(greatest(age(a.backend_xmin), age(a.backend_xid))) FILTER (WHERE $10::int8
  IS NOT NULL AND a.pid <> pg_backend_pid()) AS hz, array_agg(a.pid) FILTER (WHERE a.pid <> pg_backend_pid()
  AND ( (a.backend_type = 'client backend' AND ((a.state = 'idle' AND a.state_change <= (SELECT now()
  - $2::int8 * interval '1 millisecond')) OR (a.state IN ('idle in transaction', 'idle in transaction (aborted)')
  AND a.state_change <= (SELECT now() - $3::int8 * interval '1 millisecond')) OR (a.state IN ('active',
  'fastpath function call') AND a.query_start <= (SELECT now() - $4::int8 * interval '1 millisecond'))
  OR a.xact_start <= (SELECT now() - $5::int8 * interval '1 millisecond') OR a.backend_start <= (SELECT
  now() - $6::int8 * interval '1 millisecond') OR ($10::int8 IS NOT NULL AND greatest(age(a.backend_xmin),
  age(a.backend_xid)) >= $10::int8) OR a.pid = ANY($7::int4[]) OR (($15::bool OR $16::text[] IS NOT NULL
  OR $17::text[] IS NOT NULL OR $18::text[] IS NOT NULL OR $19::text[] IS NOT NULL) AND a.state = 'idle'
  AND ($15::bool OR a.usesysid IN (SELECT oid FROM pg_roles WHERE rolname = ANY($16::text[])) OR a.datid
  IN (SELECT oid FROM pg_database WHERE datname = ANY($17::text[])) OR a.application_name = ANY($18::text[])
  OR CASE WHEN a.client_port = -1 THEN 'local' ELSE host(a.client_addr) END = ANY($19::text[])))) IS
  TRUE AND ($8::bool OR a.usesysid NOT IN (SELECT oid FROM pg_roles WHERE rolsuper))) OR ($9::bool AND
  a.wait_event_type = 'Lock') OR a.pid IN (SELECT pid FROM ids))) AS pids FROM pg_stat_get_activity(NULL)
  a GROUP BY 1, 2, 3, 4) SELECT c.pid, c.client, c.super, c.state, c.bs, c.sc, c.qs, c.xs, c.rolname,
  c.datname, c.app, c.addr, c.query, (extract(epoch FROM now()) * 1000000)::int8 AS now_us, c.xmin_age,
  c.lock_wait, pg_is_in_recovery() AS in_recovery, c.blockers, c.wait_start, c.n, g.slots, c.holder ,
  c.backend_type, c.wait_event_type FROM (SELECT current_setting('max_connections')::int4 - current_setting('superuser_reserved_connections')::int4
  - coalesce(current_setting('reserved_connections', true)::int4, 0) AS slots) g LEFT JOIN (SELECT a.pid,
  a.backend_type = 'client backend' AS client, coalesce(r.rolsuper, false) AS super, a.state, (extract(epoch
  FROM a.backend_start) * 1000000)::int8 AS bs, (extract(epoch FROM a.state_change) * 1000000)::int8
  AS sc, (extract(epoch FROM a.query_start) * 1000000)::int8 AS qs, (extract(epoch FROM a.xact_start)
  * 1000000)::int8 AS xs, r.rolname, d.datname, a.application_name AS app, CASE WHEN a.client_port =
  -1 THEN 'local' ELSE host(a.client_addr) END AS addr, CASE WHEN $1::bool THEN left(a.query, 1024) END
  AS query, greatest(age(a.backend_xmin), age(a.backend_xid)) AS xmin_age, coalesce(a.wait_event_type
  = 'Lock', false) AS lock_wait, lg.blockers, (extract(epoch FROM lg.wait_start) * 1000000)::int8 AS
  wait_start, NULL::int8 AS n, a.backend_type, a.wait_event_type, NULL::text AS holder FROM k CROSS JOIN
  LATERAL unnest(k.pids) p(pid) CROSS JOIN LATERAL pg_stat_get_activity(p.pid) a LEFT JOIN pg_roles r
  ON r.oid = a.usesysid LEFT JOIN pg_database d ON d.oid = a.datid LEFT JOIN lg ON lg.pid = a.pid UNION
  ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, CASE WHEN $11::bool THEN coalesce(r.rolname,
  '') END, CASE WHEN $12::bool THEN coalesce(d.datname, '') END, CASE WHEN $13::bool THEN coalesce(k.app,
  '') END, CASE WHEN $14::bool THEN coalesce(k.addr, '') END, NULL, k.hz, NULL, NULL, NULL, k.n, NULL,
  NULL, NULL FROM k LEFT JOIN pg_roles r ON r.oid = k.u LEFT JOIN pg_database d ON d.oid = k.d WHERE
  k.n > 0 OR k.hz IS NOT NULL UNION ALL SELECT NULL, NULL, NULL, NULL, (extract(epoch FROM p.prepared)
  * 1000000)::int8, NULL, NULL, NULL, p.owner::text, p.database::text, p.gid, NULL, NULL, age(p.transaction),
  NULL, NULL, NULL, NULL, NULL, NULL, 'prepared' FROM pg_prepared_xacts p WHERE $10::int8 IS NOT NULL
  UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, l.database::text, l.slot_name::text,
  l.slot_type, NULL, greatest(age(l.xmin), age(l.catalog_xmin)), l.active, NULL, NULL, NULL, NULL, NULL,
  'slot' FROM pg_replication_slots l WHERE $10::int8 IS NOT NULL AND (l.xmin IS NOT NULL OR l.catalog_xmin
  IS NOT NULL)) c ON true) s;
\endif
EXECUTE pgsweeper_capture('t', NULL, NULL, NULL, NULL, '0', '{}', 't', 't', '0', 't', 't', 't', 't', 't', NULL, NULL, NULL, NULL, :'server');
DEALLOCATE pgsweeper_capture;
