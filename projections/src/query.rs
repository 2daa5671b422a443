//! Reads over a projection: get one resource, list a collection with filter,
//! order and cursor. Works on `DynamicMessage`s so one engine serves every
//! resource type; the services layer converts to typed messages at the edge.

use fleetlog_events::Revision;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value};

use crate::error::ProjectionError;
use crate::projection::Projection;
use crate::query_lang::{Cursor, Filter, OrderBy};
use crate::store::{Record, record_key};

/// Decodes a stored record and stamps `metadata.revision` with the revision
/// of its last event (events cannot carry their own sequence).
pub fn decode(
    descriptor: &MessageDescriptor,
    record: &Record,
) -> Result<DynamicMessage, ProjectionError> {
    let mut message =
        DynamicMessage::decode(descriptor.clone(), record.bytes.as_slice()).map_err(|e| {
            ProjectionError::Storage(format!("decoding a {}: {e}", descriptor.full_name()))
        })?;
    if let Some(field) = descriptor.get_field_by_name("metadata")
        && let Value::Message(metadata) = message.get_field_mut(&field)
    {
        metadata.set_field_by_name("revision", Value::I64(Revision(record.revision).to_wire()));
    }
    Ok(message)
}

/// One resource by name.
pub fn get(
    projection: &Projection,
    descriptor: &MessageDescriptor,
    name: &str,
) -> Result<Option<DynamicMessage>, ProjectionError> {
    projection
        .store()
        .get(descriptor.full_name(), name)?
        .map(|record| decode(descriptor, &record))
        .transpose()
}

/// A list request, already parsed and validated.
pub struct ListQuery {
    pub descriptor: MessageDescriptor,
    /// `{parent}/{collection}/`, or `{collection}/` for top-level resources.
    pub collection_prefix: String,
    pub filter: Filter,
    pub order: OrderBy,
    pub page_size: usize,
    /// Where the previous page ended.
    pub after: Option<Cursor>,
}

pub struct ListPage {
    pub items: Vec<DynamicMessage>,
    /// Set when more items may follow.
    pub next: Option<Cursor>,
    /// The projection revision the page was read at.
    pub revision: Revision,
}

/// Lists one page. Name order streams from the cursor and stops after the
/// page; any other order reads the matching collection and sorts it.
pub fn list(projection: &Projection, query: &ListQuery) -> Result<ListPage, ProjectionError> {
    let type_name = query.descriptor.full_name();
    let prefix = record_key(type_name, &query.collection_prefix);
    let page_size = query.page_size.max(1);
    let mut matches: Vec<(DynamicMessage, String)> = Vec::new();

    if query.order.is_empty() {
        let after = query.after.as_ref().map(|c| record_key(type_name, &c.name));
        let revision = projection
            .store()
            .scan(&prefix, after.as_deref(), |id, record| {
                if id.contains(&b'/') {
                    return Ok(true); // a nested collection's resource, not ours
                }
                let message = decode(&query.descriptor, &record)?;
                if query.filter.matches(&message) {
                    let name = name_of(&message);
                    matches.push((message, name));
                }
                Ok(matches.len() <= page_size)
            })?;
        let has_more = matches.len() > page_size;
        matches.truncate(page_size);
        let next = if has_more {
            matches.last().map(|(_, name)| Cursor {
                sort_key: Vec::new(),
                name: name.clone(),
            })
        } else {
            None
        };
        return Ok(ListPage {
            items: matches.into_iter().map(|(m, _)| m).collect(),
            next,
            revision,
        });
    }

    let revision = projection.store().scan(&prefix, None, |id, record| {
        if id.contains(&b'/') {
            return Ok(true);
        }
        let message = decode(&query.descriptor, &record)?;
        if query.filter.matches(&message) {
            let name = name_of(&message);
            matches.push((message, name));
        }
        Ok(true)
    })?;
    let mut keyed: Vec<(crate::query_lang::SortKey, String, DynamicMessage)> = matches
        .into_iter()
        .map(|(message, name)| (query.order.sort_key(&message), name, message))
        .collect();
    keyed.sort_by(|a, b| query.order.compare(&a.0, &b.0).then_with(|| a.1.cmp(&b.1)));
    let start = match &query.after {
        Some(cursor) => keyed.partition_point(|(key, name, _)| {
            query
                .order
                .compare(key, &cursor.sort_key)
                .then_with(|| name.as_str().cmp(cursor.name.as_str()))
                .is_le()
        }),
        None => 0,
    };
    let mut page: Vec<_> = keyed.into_iter().skip(start).take(page_size + 1).collect();
    let has_more = page.len() > page_size;
    page.truncate(page_size);
    let next = if has_more {
        page.last().map(|(key, name, _)| Cursor {
            sort_key: key.clone(),
            name: name.clone(),
        })
    } else {
        None
    };
    Ok(ListPage {
        items: page.into_iter().map(|(_, _, m)| m).collect(),
        next,
        revision,
    })
}

fn name_of(message: &DynamicMessage) -> String {
    message
        .get_field_by_name("name")
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}
