// @generated automatically by Diesel CLI.

diesel::table! {
    machine_state (machine_id) {
        machine_id -> Uuid,
        current_state -> Text,
        state_since -> Timestamptz,
        process_id -> Nullable<Uuid>,
        is_failure_mode -> Bool,
        failure_component -> Nullable<Text>,
        failure_description -> Nullable<Text>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    machine_state_transitions (id) {
        id -> Int8,
        machine_id -> Uuid,
        from_state -> Nullable<Text>,
        to_state -> Text,
        process_id -> Nullable<Uuid>,
        description -> Nullable<Text>,
        operation_id -> Uuid,
        kind -> Text,
        transitioned_at -> Timestamptz,
        isolation_level -> Text,
        verb -> Nullable<Text>,
    }
}

diesel::table! {
    machines (id) {
        id -> Uuid,
        status -> Text,
        current_process_id -> Nullable<Uuid>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(machine_state -> machines (machine_id));
diesel::joinable!(machine_state_transitions -> machines (machine_id));

diesel::allow_tables_to_appear_in_same_query!(machine_state, machine_state_transitions, machines,);
