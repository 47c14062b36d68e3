//! Orders the SQL of `parameters.blocks` the way Keboola's DuckDB transformation does: every `script[]`
//! item is one query; the tables each query reads and writes are read from its parse tree; blocks of the
//! same name are merged (at the first one's position) and run one after another; inside a block the
//! queries run in topological batches, the queries of a batch independent of each other.
//!
//! The rules follow the real component's planner (keboola/component-duckdb-transformation,
//! `sql_parser.py` and `query_orchestrator.py`), including its less obvious consequences:
//! - a query that only reads a table (`DROP TABLE t`, `SELECT ... FROM t`) waits for the query that
//!   produces it, so `DROP TABLE IF EXISTS t` written before `CREATE TABLE t` runs after it;
//! - the producer of a table is the last query writing it (`CREATE`, `INSERT`, `UPDATE`, `DELETE`), an
//!   `INSERT` preferred over the others; an `UPDATE`/`DELETE` that is a table's producer also reads it, so
//!   it waits for itself and the block is a circular dependency (the real component fails such a block);
//! - an `INSERT` waits for the `CREATE` of its table in the same block.
//!
//! Table names are compared by their last part, case-insensitively (DuckDB resolves names that way).

use crate::interface::config::Block;
use sqlparser::ast::{
    CopySource, FromTable, ObjectName, Query as SqlQuery, Statement, TableFactor, TableObject,
    Visit, Visitor,
};
use sqlparser::dialect::DuckDbDialect;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

/// What a query does at its top level; decides which query counts as a table's producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Create,
    Insert,
    Other,
}

/// The tables one query reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Analysis {
    pub reads: BTreeSet<String>,
    pub writes: BTreeSet<String>,
    pub kind: Kind,
}

/// One `script[]` item with where it came from.
#[derive(Debug, Clone)]
pub(super) struct Query {
    /// Position among all queries of the configuration.
    pub index: usize,
    pub block: String,
    pub block_index: usize,
    pub code: String,
    pub code_index: usize,
    pub statement_index: usize,
    pub statements_in_code: usize,
    pub sql: String,
    /// `None` when the SQL parser does not understand the query.
    pub analysis: Option<Analysis>,
}

impl Query {
    /// `code #1 `Join`, statement 2 of 3`: where the query is written.
    pub(super) fn label(&self) -> String {
        format!(
            "{}, statement {} of {}",
            self.code_label(),
            self.statement_index + 1,
            self.statements_in_code
        )
    }

    /// `code #1 `Join``.
    pub(super) fn code_label(&self) -> String {
        numbered("code", self.code_index, &self.code)
    }

    /// `block #2 `Join``.
    pub(super) fn block_label(&self) -> String {
        numbered("block", self.block_index, &self.block)
    }
}

fn numbered(kind: &str, index: usize, name: &str) -> String {
    if name.trim().is_empty() {
        format!("{kind} #{}", index + 1)
    } else {
        format!("{kind} #{} `{name}`", index + 1)
    }
}

/// A merged block: batches run in order, the queries of one batch in any order or in parallel.
#[derive(Debug, Clone)]
pub(super) struct PlannedBlock {
    pub label: String,
    pub batches: Vec<Vec<Query>>,
}

/// Parses one query (one or more `;`-separated statements). `None` when it does not parse.
pub(super) fn analyze(sql: &str) -> Option<Analysis> {
    let statements = sqlparser::parser::Parser::parse_sql(&DuckDbDialect {}, sql).ok()?;
    let mut reads = BTreeSet::new();
    let mut writes = BTreeSet::new();
    let mut created = BTreeSet::new();
    let mut kind = None;
    for statement in &statements {
        let mut found = Relations::default();
        let _ = statement.visit(&mut found);
        // The parser does not mark the names of DROP and COPY as relations; SQLGlot's tree (the real
        // planner) has them as tables, so these statements read (wait for) their table.
        match statement {
            Statement::Drop { names, .. } => found.relations.extend(names.iter().map(name_of)),
            Statement::Copy {
                source: CopySource::Table { table_name, .. },
                ..
            } => {
                found.relations.insert(name_of(table_name));
            }
            _ => {}
        }
        let (target, statement_kind) = match statement {
            Statement::CreateTable(c) => (vec![name_of(&c.name)], Kind::Create),
            Statement::CreateView(c) => (vec![name_of(&c.name)], Kind::Create),
            Statement::Insert(i) => match &i.table {
                TableObject::TableName(n) => (vec![name_of(n)], Kind::Insert),
                _ => (vec![], Kind::Other),
            },
            Statement::Update(u) => (
                factor_name(&u.table.relation).into_iter().collect(),
                Kind::Other,
            ),
            Statement::Delete(d) => {
                let mut names: Vec<String> = d.tables.iter().map(name_of).collect();
                if names.is_empty() {
                    let from = match &d.from {
                        FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
                    };
                    names.extend(from.first().and_then(|t| factor_name(&t.relation)));
                }
                (names, Kind::Other)
            }
            _ => (vec![], Kind::Other),
        };
        // The first CREATE or INSERT decides the query's kind, as in the real component.
        if kind.is_none() && statement_kind != Kind::Other {
            kind = Some(statement_kind);
        }
        let mut statement_reads: BTreeSet<String> = found
            .relations
            .difference(&found.functions)
            .cloned()
            .collect();
        for cte in &found.ctes {
            statement_reads.remove(cte);
        }
        if statement_kind == Kind::Insert {
            // INSERT INTO t SELECT ... FROM t does not wait for itself.
            for t in &target {
                statement_reads.remove(t);
            }
        }
        if statement_kind == Kind::Create {
            created.extend(target.iter().cloned());
        }
        reads.extend(statement_reads);
        writes.extend(target);
    }
    // A query cannot depend on what it creates itself; it can on what it only inserts into.
    for t in &created {
        reads.remove(t);
    }
    Some(Analysis {
        reads,
        writes,
        kind: kind.unwrap_or(Kind::Other),
    })
}

/// Collects every table name in a statement, the names called as table functions, and CTE names.
#[derive(Default)]
struct Relations {
    relations: BTreeSet<String>,
    functions: BTreeSet<String>,
    ctes: BTreeSet<String>,
}

impl Visitor for Relations {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        self.relations.insert(name_of(relation));
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            args: Some(_),
            ..
        } = factor
        {
            self.functions.insert(name_of(name));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &SqlQuery) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_lowercase());
            }
        }
        ControlFlow::Continue(())
    }
}

/// The last part of a name, lower-cased: `main."Orders"` → `orders`.
fn name_of(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.to_lowercase())
        .unwrap_or_default()
}

fn factor_name(factor: &TableFactor) -> Option<String> {
    match factor {
        TableFactor::Table { name, .. } => Some(name_of(name)),
        _ => None,
    }
}

/// A block whose queries depend on each other in a circle; names the queries left unordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CircularDependency {
    pub block: String,
    pub queries: Vec<String>,
}

impl std::fmt::Display for CircularDependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "circular dependency among the queries of {}: {}. Each of them waits for a table another one \
             (or itself, for an UPDATE or DELETE written as its own script item) produces; put the statements \
             that must run in a fixed order into one script item, or split them into blocks",
            self.block,
            self.queries.join("; ")
        )
    }
}

/// Lists every query of the configuration in order, parsed.
pub(super) fn queries(blocks: &[Block]) -> Vec<Query> {
    let mut out = Vec::new();
    for (b, block) in blocks.iter().enumerate() {
        for (c, code) in block.codes.iter().enumerate() {
            for (s, sql) in code.script.iter().enumerate() {
                if sql.trim().is_empty() {
                    continue;
                }
                out.push(Query {
                    index: out.len(),
                    block: block.name.clone(),
                    block_index: b,
                    code: code.name.clone(),
                    code_index: c,
                    statement_index: s,
                    statements_in_code: code.script.len(),
                    sql: sql.clone(),
                    analysis: analyze(sql),
                });
            }
        }
    }
    out
}

/// Plans the blocks: merged by name, each a list of batches.
pub(super) fn plan(blocks: &[Block]) -> Result<Vec<PlannedBlock>, CircularDependency> {
    let all = queries(blocks);
    // Producers over all queries (later writers win, INSERTs over the rest); only those in the same
    // block order anything, as blocks run one after another anyway.
    let mut producers: BTreeMap<&str, usize> = BTreeMap::new();
    for q in &all {
        if let Some(a) = &q.analysis {
            for t in &a.writes {
                producers.insert(t, q.index);
            }
        }
    }
    for q in &all {
        if let Some(a) = q.analysis.as_ref().filter(|a| a.kind == Kind::Insert) {
            for t in &a.writes {
                producers.insert(t, q.index);
            }
        }
    }

    // Blocks by name, in the order of their first occurrence.
    let mut order: Vec<&str> = Vec::new();
    let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for q in &all {
        let name = q.block.as_str();
        if !members.contains_key(name) {
            order.push(name);
        }
        members.entry(name).or_default().push(q.index);
    }

    let mut planned = Vec::new();
    for name in order {
        let ids = &members[name];
        let label = all[ids[0]].block_label();
        let batches = batches(&all, ids, &producers).map_err(|left| CircularDependency {
            block: label.clone(),
            queries: left.iter().map(|&i| describe(&all[i])).collect(),
        })?;
        planned.push(PlannedBlock { label, batches });
    }
    Ok(planned)
}

/// `code #1 `C`, statement 2 of 3 (reads t; writes r)` for the circular-dependency message.
fn describe(q: &Query) -> String {
    match &q.analysis {
        Some(a) => {
            let list = |s: &BTreeSet<String>| {
                if s.is_empty() {
                    "nothing".to_owned()
                } else {
                    s.iter().cloned().collect::<Vec<_>>().join(", ")
                }
            };
            format!(
                "{} (reads {}; writes {})",
                q.label(),
                list(&a.reads),
                list(&a.writes)
            )
        }
        None => q.label(),
    }
}

/// Kahn's algorithm in rounds over one block; `Err` holds the queries left in a cycle.
fn batches(
    all: &[Query],
    ids: &[usize],
    producers: &BTreeMap<&str, usize>,
) -> Result<Vec<Vec<Query>>, Vec<usize>> {
    let in_block: BTreeSet<usize> = ids.iter().copied().collect();
    let mut edges: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut waiting: BTreeMap<usize, usize> = ids.iter().map(|&i| (i, 0)).collect();
    let mut add = |from: usize, to: usize, waiting: &mut BTreeMap<usize, usize>| {
        edges.entry(from).or_default().push(to);
        *waiting.get_mut(&to).expect("query in block") += 1;
    };

    // The last CREATE of each table in this block.
    let mut creators: BTreeMap<&str, usize> = BTreeMap::new();
    for &i in ids {
        if let Some(a) = all[i].analysis.as_ref().filter(|a| a.kind == Kind::Create) {
            for t in &a.writes {
                creators.insert(t, i);
            }
        }
    }
    for (pos, &i) in ids.iter().enumerate() {
        let Some(a) = &all[i].analysis else {
            // Our parser does not know every DuckDB extension of SQL (the real component's SQLGlot reads
            // other things). Guessing "no dependencies" could move the query before a table it needs, so
            // an unparsed query keeps its written place: it waits for everything before it, and everything
            // after it waits for it.
            for &before in &ids[..pos] {
                add(before, i, &mut waiting);
            }
            for &after in &ids[pos + 1..] {
                add(i, after, &mut waiting);
            }
            continue;
        };
        if a.kind == Kind::Insert {
            for t in &a.writes {
                if let Some(&creator) = creators.get(t.as_str()) {
                    add(creator, i, &mut waiting);
                }
            }
        }
        for t in &a.reads {
            if let Some(&producer) = producers.get(t.as_str())
                && in_block.contains(&producer)
            {
                add(producer, i, &mut waiting);
            }
        }
    }

    let mut remaining: Vec<usize> = ids.to_vec();
    let mut result = Vec::new();
    while !remaining.is_empty() {
        let ready: Vec<usize> = remaining
            .iter()
            .copied()
            .filter(|i| waiting[i] == 0)
            .collect();
        if ready.is_empty() {
            return Err(remaining);
        }
        remaining.retain(|i| !ready.contains(i));
        for i in &ready {
            for to in edges.get(i).map(Vec::as_slice).unwrap_or_default() {
                *waiting.get_mut(to).expect("query in block") -= 1;
            }
        }
        result.push(ready.iter().map(|&i| all[i].clone()).collect());
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interface::config::Code;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn block(name: &str, codes: &[(&str, &[&str])]) -> Block {
        Block {
            name: name.into(),
            codes: codes
                .iter()
                .map(|(n, script)| Code {
                    name: n.to_string(),
                    script: script.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
        }
    }

    /// The plan as (block label, batches of "code:statement" names).
    fn shape(blocks: &[Block]) -> Vec<Vec<Vec<String>>> {
        plan(blocks)
            .unwrap()
            .into_iter()
            .map(|b| {
                b.batches
                    .into_iter()
                    .map(|batch| {
                        batch
                            .into_iter()
                            .map(|q| format!("{}:{}", q.code, q.statement_index))
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn reads_and_writes() {
        let a = analyze("CREATE TABLE out AS SELECT * FROM a JOIN main.\"B\" USING (id)").unwrap();
        assert_eq!(a.reads, set(&["a", "b"]));
        assert_eq!(a.writes, set(&["out"]));
        assert_eq!(a.kind, Kind::Create);

        let a = analyze("CREATE VIEW 'week.csv' AS (SELECT * FROM 'days.csv' WHERE id::INT <= 5)")
            .unwrap();
        assert_eq!(a.reads, set(&["days.csv"]));
        assert_eq!(a.writes, set(&["week.csv"]));

        let a = analyze("INSERT INTO t SELECT * FROM t UNION ALL SELECT * FROM s").unwrap();
        assert_eq!(
            (a.reads, a.writes, a.kind),
            (set(&["s"]), set(&["t"]), Kind::Insert)
        );

        let a =
            analyze("WITH x AS (SELECT * FROM src) SELECT * FROM x, read_csv('f.csv')").unwrap();
        assert_eq!(a.reads, set(&["src"]));
        assert!(a.writes.is_empty());

        let a = analyze("UPDATE t SET x = 2 WHERE id IN (SELECT id FROM s)").unwrap();
        assert_eq!((a.reads, a.writes), (set(&["s", "t"]), set(&["t"])));

        let a = analyze("DELETE FROM t WHERE x = 1").unwrap();
        assert_eq!(a.writes, set(&["t"]));

        let a = analyze("DROP TABLE IF EXISTS t").unwrap();
        assert_eq!((a.reads, a.writes), (set(&["t"]), set(&[])));
        let a = analyze("COPY t TO 'out/files/t.parquet' (FORMAT parquet)").unwrap();
        assert_eq!((a.reads, a.writes), (set(&["t"]), set(&[])));
        // DuckDB's own syntax: FROM-first, EXCLUDE, ->> and string table names.
        let a = analyze("CREATE TABLE x AS FROM y").unwrap();
        assert_eq!((a.reads, a.writes), (set(&["y"]), set(&["x"])));
        let a = analyze("SELECT * EXCLUDE (a), payload->>'$.k' FROM 'in/files/e.parquet'").unwrap();
        assert_eq!(a.reads, set(&["in/files/e.parquet"]));

        // What a query creates itself is no dependency, also across its statements.
        let a = analyze("CREATE TABLE t AS SELECT 1 AS x; UPDATE t SET x = 2").unwrap();
        assert_eq!((a.reads, a.writes), (set(&[]), set(&["t"])));

        assert!(analyze("SELEC oops").is_none());
    }

    #[test]
    fn reversed_order_runs_the_producer_first() {
        let blocks = [block(
            "B",
            &[(
                "C",
                &[
                    "CREATE TABLE b AS SELECT * FROM a",
                    "CREATE TABLE a AS SELECT 1 AS x",
                ],
            )],
        )];
        assert_eq!(shape(&blocks), vec![vec![vec!["C:1"], vec!["C:0"]]]);
    }

    #[test]
    fn chain_and_fan_out_batches() {
        // The real component's `query_dependencies` shape: t1 → t2 → t3 and t1 → t4 → t5.
        let blocks = [block(
            "B",
            &[(
                "C",
                &[
                    "create table \"t1\" as select 1",
                    "create view \"t2\" as select * from \"t1\"",
                    "create table t3 as select * from \"t2\"",
                    "create table \"t4-new\" as select * from t1",
                    "create table \"t5\" as select * from \"t4-new\"",
                ],
            )],
        )];
        assert_eq!(
            shape(&blocks),
            vec![vec![vec!["C:0"], vec!["C:1", "C:3"], vec!["C:2", "C:4"]]]
        );
    }

    #[test]
    fn drop_before_create_runs_after_it() {
        let blocks = [block(
            "B",
            &[(
                "C",
                &["DROP TABLE IF EXISTS t", "CREATE TABLE t AS SELECT 1 AS x"],
            )],
        )];
        assert_eq!(shape(&blocks), vec![vec![vec!["C:1"], vec!["C:0"]]]);
    }

    #[test]
    fn create_update_read_is_circular() {
        let blocks = [block(
            "B",
            &[(
                "C",
                &[
                    "CREATE TABLE t AS SELECT 1 AS x",
                    "UPDATE t SET x = 2",
                    "CREATE TABLE r AS SELECT * FROM t",
                ],
            )],
        )];
        let err = plan(&blocks).unwrap_err();
        assert_eq!(err.block, "block #1 `B`");
        assert_eq!(err.queries.len(), 2, "{err}");
        assert!(
            err.queries[0].starts_with("code #1 `C`, statement 2 of 3"),
            "{err}"
        );
        assert!(
            err.queries[1].starts_with("code #1 `C`, statement 3 of 3"),
            "{err}"
        );
        // In one script item the same statements are fine.
        let blocks = [block(
            "B",
            &[(
                "C",
                &[
                    "CREATE TABLE t AS SELECT 1 AS x; UPDATE t SET x = 2",
                    "CREATE TABLE r AS SELECT * FROM t",
                ],
            )],
        )];
        assert_eq!(shape(&blocks), vec![vec![vec!["C:0"], vec!["C:1"]]]);
    }

    #[test]
    fn insert_waits_for_create_and_readers_wait_for_insert() {
        let blocks = [block(
            "B",
            &[
                ("Read", &["CREATE TABLE r AS SELECT count(*) AS n FROM t"]),
                ("Insert", &["INSERT INTO t VALUES (1)"]),
                ("Create", &["CREATE TABLE t (x INTEGER)"]),
            ],
        )];
        assert_eq!(
            shape(&blocks),
            vec![vec![vec!["Create:0"], vec!["Insert:0"], vec!["Read:0"]]]
        );
    }

    #[test]
    fn same_named_blocks_merge_at_the_first_position() {
        let blocks = [
            block("X", &[("A", &["CREATE TABLE a AS SELECT 1 AS x"])]),
            block("Y", &[("B", &["CREATE TABLE b AS SELECT * FROM a"])]),
            block("X", &[("C", &["CREATE TABLE c AS SELECT 3 AS x"])]),
        ];
        let planned = plan(&blocks).unwrap();
        assert_eq!(planned.len(), 2);
        assert_eq!(planned[0].label, "block #1 `X`");
        assert_eq!(
            shape(&blocks),
            vec![vec![vec!["A:0", "C:0"]], vec![vec!["B:0"]]]
        );
    }

    #[test]
    fn producers_in_other_blocks_do_not_order() {
        // The read of `a` in block Y has its producer in block X, which ran before.
        let blocks = [
            block("X", &[("A", &["CREATE TABLE a AS SELECT 1 AS x"])]),
            block(
                "Y",
                &[(
                    "B",
                    &[
                        "CREATE TABLE b AS SELECT * FROM a",
                        "CREATE TABLE c AS SELECT 2 AS y",
                    ],
                )],
            ),
        ];
        assert_eq!(
            shape(&blocks),
            vec![vec![vec!["A:0"]], vec![vec!["B:0", "B:1"]]]
        );
    }

    #[test]
    fn unparsed_query_keeps_its_place() {
        let blocks = [block(
            "B",
            &[(
                "C",
                &[
                    "CREATE TABLE a AS SELECT 1 AS x",
                    "CREATE TABLE b AS SELECT 2 AS y",
                    "SELEC oops",
                    "CREATE TABLE c AS SELECT 3 AS z",
                ],
            )],
        )];
        assert_eq!(
            shape(&blocks),
            vec![vec![vec!["C:0", "C:1"], vec!["C:2"], vec!["C:3"]]]
        );
    }

    #[test]
    fn names_match_case_insensitively_and_blank_items_are_skipped() {
        let blocks = [block(
            "B",
            &[(
                "C",
                &[
                    "CREATE TABLE Out AS SELECT * FROM \"SRC\"",
                    "  ",
                    "CREATE TABLE src AS SELECT 1 AS x",
                ],
            )],
        )];
        assert_eq!(shape(&blocks), vec![vec![vec!["C:2"], vec!["C:0"]]]);
    }
}
