//! Person records as the service understands them: every value here has been parsed and checked,
//! so code past the handlers never sees a name that is too long or an email without a domain.

mod age;
mod email;
mod page;
mod person_name;

pub use age::Age;
pub use email::Email;
pub use page::{NameFilter, PageSize, PageToken};
pub use person_name::PersonName;

/// Why a value was refused; the message is safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// A person's id, assigned by the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersonId(pub i64);

impl PersonId {
    /// Ids the store hands out are positive; anything else names nobody.
    pub fn parse(id: i64) -> Result<Self, Invalid> {
        if id <= 0 {
            return Err(Invalid(format!(
                "person_id must be a positive number, got {id}"
            )));
        }
        Ok(Self(id))
    }
}

impl std::fmt::Display for PersonId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The fields of a person that callers write: on create, and in full on update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersonFields {
    pub name: PersonName,
    pub email: Email,
    pub age: Age,
}

impl PersonFields {
    pub fn parse(name: String, email: String, age: i32) -> Result<Self, Invalid> {
        Ok(Self {
            name: PersonName::parse(name)?,
            email: Email::parse(email)?,
            age: Age::parse(age)?,
        })
    }
}

/// A stored person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person {
    pub id: PersonId,
    pub fields: PersonFields,
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only persons with a greater id; `None` starts at the beginning.
    pub after: Option<PersonId>,
    pub size: PageSize,
    pub name_filter: Option<NameFilter>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub persons: Vec<Person>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageToken>,
}

/// The tutorials' list of persons, loaded into an empty store on request.
pub fn sample_persons() -> Vec<PersonFields> {
    [
        ("Ann Smith", "ann.smith@example.com", 34),
        ("Bob Jones", "bob.jones@example.com", 27),
        ("Carla Gomez", "carla.gomez@example.com", 45),
        ("David Lee", "david.lee@example.com", 19),
        ("Eva Novak", "eva.novak@example.com", 52),
        ("Farid Haddad", "farid.haddad@example.com", 38),
    ]
    .into_iter()
    .filter_map(|(name, email, age)| PersonFields::parse(name.into(), email.into(), age).ok())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_person_is_valid() {
        assert_eq!(sample_persons().len(), 6);
    }

    #[test]
    fn person_ids_must_be_positive() {
        assert!(PersonId::parse(0).is_err());
        assert!(PersonId::parse(-3).is_err());
        assert_eq!(PersonId::parse(7), Ok(PersonId(7)));
    }
}
