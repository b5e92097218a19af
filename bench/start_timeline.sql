-- When the runs of an agents trial (bench/run.py --only agents --keep-db) got going:
-- percentiles over the sessions of the seconds, from the first start command, to each
-- session's start command (its receipt), execution:started (claimed and begun),
-- its first node_state_change (the node began), its first and its last token_stream.
with c as (select session_id, min(created_at) t from sessions_app_commandreceipt group by 1),
s as (select session_id, min(created_at) t from realtime_sessionevent
      where event = 'execution:started' group by 1),
n as (select session_id, min(created_at) t from realtime_sessionevent
      where event = 'node_state_change' group by 1),
f as (select session_id, min(created_at) t from realtime_sessionevent
      where event = 'token_stream' group by 1),
l as (select session_id, max(created_at) t from realtime_sessionevent
      where event = 'token_stream' group by 1),
z as (select min(t) t0 from c),
j as (select extract(epoch from c.t - z.t0) cmd, extract(epoch from s.t - z.t0) st,
             extract(epoch from n.t - z.t0) nd, extract(epoch from f.t - z.t0) ft,
             extract(epoch from l.t - z.t0) lt
      from c join s using (session_id) join n using (session_id)
             join f using (session_id) join l using (session_id), z)
select p as percentile,
       round(percentile_cont(p) within group (order by cmd)::numeric, 2) as command,
       round(percentile_cont(p) within group (order by st)::numeric, 2) as started,
       round(percentile_cont(p) within group (order by nd)::numeric, 2) as node_began,
       round(percentile_cont(p) within group (order by ft)::numeric, 2) as first_token,
       round(percentile_cont(p) within group (order by lt)::numeric, 2) as last_token
from j, unnest(array[0, 0.1, 0.25, 0.5, 0.75, 0.9, 1]) p group by p order by p;
