//! Businesses (tenants) as registered by the host application.

use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use tributary_domain::{AgencyId, BusinessId, Slug};

use crate::entities::businesses::{self, Entity, Model};
use crate::{Database, PersistenceError, PurgeScope, purge_business_rows};

/// Registers a business or renames it. `Conflict("slug")` when another business has the slug.
pub async fn upsert(
    db: &Database,
    id: &BusinessId,
    slug: &Slug,
    name: &str,
    agency: Option<&AgencyId>,
    now: i64,
) -> Result<Model, PersistenceError> {
    let model = businesses::ActiveModel {
        id: Set(id.as_str().to_owned()),
        slug: Set(slug.as_str().to_owned()),
        name: Set(name.to_owned()),
        agency_id: Set(agency.map(|a| a.as_str().to_owned())),
        created_at: Set(now),
        updated_at: Set(now),
    };
    Entity::insert(model)
        .on_conflict(
            OnConflict::column(businesses::Column::Id)
                .update_columns([
                    businesses::Column::Slug,
                    businesses::Column::Name,
                    businesses::Column::AgencyId,
                    businesses::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(db.writer())
        .await
        .map_err(|e| PersistenceError::unique(e, "slug"))?;
    get(db, id)
        .await?
        .ok_or_else(|| PersistenceError::Corrupt("business vanished".into()))
}

/// The business, if it exists.
pub async fn get(db: &Database, id: &BusinessId) -> Result<Option<Model>, PersistenceError> {
    Ok(Entity::find_by_id(id.as_str()).one(db.conn()).await?)
}

/// The business with this slug, if any (webhook routing).
pub async fn by_slug(db: &Database, slug: &str) -> Result<Option<Model>, PersistenceError> {
    Ok(Entity::find()
        .filter(businesses::Column::Slug.eq(slug))
        .one(db.conn())
        .await?)
}

/// Removes the business and every row it has, in one transaction.
pub async fn delete(db: &Database, id: &BusinessId) -> Result<bool, PersistenceError> {
    let txn = db.begin_write().await?;
    purge_business_rows(&txn, id, PurgeScope::Everything).await?;
    let res = Entity::delete_by_id(id.as_str()).exec(&txn).await?;
    txn.commit().await?;
    Ok(res.rows_affected == 1)
}
